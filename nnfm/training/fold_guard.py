"""One training per fold folder: refuse a second ``nnUNetv2_train`` of a fold that is running or finished.

nnU-Net keys a model by dataset, trainer, plans, configuration and fold, and writes everything of a run into that
one folder. Two trainings of the same fold at once both exit 0: the folder keeps whichever wrote last (checkpoints,
provenance, validation) and the other run is lost without a word; training a finished fold again replaces its model.
nnFM's trainers therefore

- write a lock file, ``nnfm_training.lock`` (pid, host, process start, start time, command), into the fold folder
  while they train (from ``run_training`` until the validation after it ends or the process exits), and refuse to
  start on a folder whose lock belongs to a live process; a lock whose process is gone (same host, pid not running,
  or running but started at another time: a reused pid) is stale and replaced, with a line in the log;
- refuse to train a fold that holds ``checkpoint_final.pth`` unless nnU-Net's ``--c`` (continue) or ``--val``
  (validation only) is given, or ``nnFM_OVERWRITE=1`` asks to train it again on purpose.

The refusals name the running or finished run and the command for each way on. nnFM's benchmark never trains a
fold twice: it resumes with ``--c``, validates with ``--val`` and skips finished runs (nnfm/benchmark/runs.py).
"""
import atexit
import datetime
import json
import os
import shlex
import socket
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from nnfm.errors import FoldInUseError
from nnfm.training import validation

LOCK_FILE = "nnfm_training.lock"
OVERWRITE_ENV = "nnFM_OVERWRITE"
FINAL = validation.FINAL


def _process_start(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot (Linux /proc), to tell a reused pid; None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def command_line(argv: Optional[Sequence[str]] = None, add: Sequence[str] = (), drop: Sequence[str] = ()) -> str:
    """This process's ``nnUNetv2_train`` line (``argv``: sys.argv), without the flags in ``drop`` (and
    ``-pretrained_weights`` with its value when ``add`` continues or validates), with ``add`` appended."""
    argv = list(sys.argv if argv is None else argv)
    words = [Path(argv[0]).name if argv else "nnUNetv2_train"]
    rest = argv[1:]
    skip = False
    for i, word in enumerate(rest):
        if skip:
            skip = False
            continue
        name = word.partition("=")[0]
        if name in drop:
            continue
        if add and len(name) >= 3 and "-pretrained_weights".startswith(name):
            skip = "=" not in word  # nnU-Net refuses --c together with -pretrained_weights
            continue
        words.append(word)
    return " ".join(shlex.quote(w) for w in words + list(add))


def validation_only(argv: Optional[Sequence[str]] = None) -> bool:
    """Whether this process only validates: nnU-Net's ``--val`` (the trainer is not told), or nnFM_validate."""
    return validation.VALIDATING or "--val" in list(sys.argv[1:] if argv is None else argv)


def read_lock(folder) -> Optional[dict]:
    path = Path(folder) / LOCK_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"unreadable": str(path)}


def lock_is_live(lock: dict) -> bool:
    """Whether the process that wrote ``lock`` still runs (a lock of another host counts as live: it cannot be
    checked from here)."""
    if "unreadable" in lock:
        return False
    if lock.get("host") != socket.gethostname():
        return True
    pid = int(lock.get("pid", -1))
    if pid == os.getpid():
        return False  # this process: its own lock (e.g. a trainer built twice in one process)
    if pid <= 0 or not _alive(pid):
        return False
    started = _process_start(pid)
    return started is None or lock.get("process_start") in (None, started)


def describe_lock(lock: dict) -> str:
    return (f"pid {lock.get('pid')} on host {lock.get('host')}, started {lock.get('started')} "
            f"({lock.get('command')})")


def check_fold_free(folder, continuing: bool = False, validating: bool = False, argv=None) -> Optional[str]:
    """Raise FoldInUseError when ``folder`` (an nnU-Net fold folder) is being trained by a live process, or holds a
    finished training and this run neither continues (``--c``) nor validates (``--val``) nor has nnFM_OVERWRITE=1.
    Returns a line for the log when it lets a finished fold be trained again, else None."""
    folder = Path(folder)
    lock = read_lock(folder)
    if lock is not None and lock_is_live(lock):
        lock_path = folder / LOCK_FILE
        other_host = lock.get("host") != socket.gethostname()
        raise FoldInUseError(
            f"{folder} is being trained right now by {describe_lock(lock)}. A second training of the same fold "
            f"would write into the same folder: one of the two runs' checkpoints, logs and provenance would be lost. "
            f"Fix: train another fold, or wait for that run to end (then it holds checkpoint_final.pth); to continue "
            f"it after stopping it (kill {lock.get('pid')}), run:\n"
            f"    $ {command_line(argv, add=['--c'], drop=['--c', '--val'])}\n"
            + (f"  The lock is from another host, which nnFM cannot check; if that run is gone, delete {lock_path}."
               if other_host else f"  (lock file: {lock_path})"))
    final = folder / FINAL
    if continuing or validating or not final.is_file():
        return None
    if os.environ.get(OVERWRITE_ENV, "").strip().lower() in ("1", "true", "yes"):
        return f"nnFM: {OVERWRITE_ENV}={os.environ[OVERWRITE_ENV]}: training over the finished run in {folder}."
    raise FoldInUseError(
        f"{folder} holds a finished training ({_finished_run(folder)}). Training this fold again would replace that "
        f"model, its validation and provenance. Fix: keep it and re-run its validation:\n"
        f"    $ {command_line(argv, add=['--val'], drop=['--c', '--val'])}\n"
        f"  or continue it (nnU-Net's --c; a finished run only validates again):\n"
        f"    $ {command_line(argv, add=['--c'], drop=['--c', '--val'])}\n"
        f"  or train it again on purpose, replacing it:\n"
        f"    $ {OVERWRITE_ENV}=1 {command_line(argv, drop=['--c', '--val'])}")


def _finished_run(folder: Path) -> str:
    """checkpoint_final.pth's time, the weights it started from (nnfm_pretrained.json) and its validation Dice."""
    parts = [f"{FINAL} written {datetime.datetime.fromtimestamp((folder / FINAL).stat().st_mtime):%Y-%m-%d %H:%M:%S}"]
    try:
        provenance = json.loads((folder / "nnfm_pretrained.json").read_text())
        parts.append(f"trainer {provenance.get('trainer')}, weights {provenance.get('weights')}")
    except (OSError, ValueError):
        pass
    try:
        summary = json.loads((folder / "validation" / "summary.json").read_text())
        parts.append(f"validation mean Dice {summary['foreground_mean']['Dice']:.4f}")
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return "; ".join(parts)


class FoldLock:
    """The lock file of one training process in one fold folder (acquire / release; released at exit)."""

    def __init__(self, folder):
        self.path = Path(folder) / LOCK_FILE
        self.held = False
        self.replaced: Optional[dict] = None

    def acquire(self, argv=None) -> None:
        """Create the lock atomically. A stale lock (its process gone) is replaced (``self.replaced`` says whose);
        a live one raises FoldInUseError (check_fold_free's message)."""
        record = {"pid": os.getpid(), "host": socket.gethostname(), "process_start": _process_start(os.getpid()),
                  "started": datetime.datetime.now().isoformat(timespec="seconds"),
                  "command": command_line(argv)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                existing = read_lock(self.path.parent)
                if existing is None:
                    continue  # released in between: try again
                if lock_is_live(existing):
                    check_fold_free(self.path.parent, continuing=True, argv=argv)  # raises, naming the live run
                if existing.get("pid") == os.getpid() and existing.get("host") == socket.gethostname():
                    self.held = True  # already ours
                    return
                self.replaced = existing
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(descriptor, "w") as handle:
                json.dump(record, handle, indent=1)
            self.held = True
            atexit.register(self.release)
            return
        raise FoldInUseError(f"Could not create the training lock {self.path}; another process keeps replacing it.")

    def release(self) -> None:
        if not self.held:
            return
        lock = read_lock(self.path.parent)
        if lock is not None and lock.get("pid") == os.getpid() and lock.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)
        self.held = False


def stale_lock_note(lock: Optional[dict]) -> List[str]:
    if not lock:
        return []
    return [f"nnFM: replaced the stale training lock of {describe_lock(lock)}: that process no longer runs."]


def fold_folder(trainer_name: str, plans: dict, configuration: str, fold) -> str:
    """The fold folder nnU-Net's trainer __init__ will use (nnUNetTrainer.output_folder), known before it runs."""
    from nnunetv2.paths import nnUNet_results

    return os.path.join(os.fspath(nnUNet_results), plans["dataset_name"],
                        f"{trainer_name}__{plans['plans_name']}__{configuration}", f"fold_{fold}")


class OneTrainingPerFold:
    """Mixin for an nnU-Net trainer (before nnUNetTrainer in the bases): call ``refuse_busy_fold`` in ``__init__``
    before nnUNetTrainer.__init__ (which pops ``continue_training`` from the plans and starts writing into the fold
    folder); ``run_training`` then holds the fold's lock until ``perform_actual_validation`` ends or the process
    exits."""
    _fold_lock: Optional[FoldLock] = None
    _continuing: bool = False

    def refuse_busy_fold(self, plans: dict, configuration: str, fold) -> None:
        # nnUNetv2_train --c: nnU-Net's run_training passes it in the plans
        self._continuing = bool(plans.get("continue_training", False))
        self._fold_lock = None
        folder = fold_folder(type(self).__name__, plans, configuration, fold)
        check_fold_free(folder, self._continuing, validation_only())
        # nnU-Net's --val without checkpoint_final.pth: named here, with nnFM_validate, before nnU-Net's RuntimeError
        validation.refuse_validation_without_final(folder, type(self).__name__, plans, configuration, fold)

    def run_training(self):
        if self.local_rank == 0:
            note = check_fold_free(self.output_folder, self._continuing)
            if note:
                self.print_to_log_file(note, also_print_to_console=True)
            self._fold_lock = FoldLock(self.output_folder)
            self._fold_lock.acquire()
            for line in stale_lock_note(self._fold_lock.replaced):
                self.print_to_log_file(line, also_print_to_console=True)
        try:
            super().run_training()
        except BaseException:
            self._release_fold_lock()
            raise

    def perform_actual_validation(self, save_probabilities: bool = False):
        try:
            super().perform_actual_validation(save_probabilities)
        finally:
            self._release_fold_lock()

    def _release_fold_lock(self) -> None:
        if self._fold_lock is not None:
            self._fold_lock.release()
