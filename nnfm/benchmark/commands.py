"""Running nnU-Net's and nnFM's command-line tools, each command's output kept in a log file."""
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Optional

from nnfm.paths import register_trainers


class CommandFailed(RuntimeError):
    pass


def python_module(module: str) -> list:
    return [sys.executable, "-m", module]


def nnunet_environment(base: dict) -> dict:
    """base with nnFM's trainers findable by nnU-Net (as the installed start-up hook does)."""
    return register_trainers(dict(base, nnUNet_compile=base.get("nnUNet_compile", "0")))


def run_command(command: list, env: dict, log_file: Path, verbose: bool = False,
                cwd: Optional[Path] = None) -> None:
    """Run command, appending its output to log_file (and the console when verbose); raise on failure."""
    command = [str(c) for c in command]
    line = shlex.join(command)
    print(f"  $ {line}", flush=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a") as log:
        log.write(f"\n$ {line}\n")
        log.flush()
        if verbose:
            process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True)
            for output in process.stdout:
                sys.stdout.write(output)
                log.write(output)
            returncode = process.wait()
        else:
            returncode = subprocess.run(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT).returncode
    if returncode != 0:
        raise CommandFailed(f"{Path(command[0]).name} exited with {returncode}; last output "
                            f"({log_file}):\n{tail(log_file)}")


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
