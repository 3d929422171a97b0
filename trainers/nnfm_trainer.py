"""nnFMTrainer: nnU-Net's trainer with a pretrained anatomix U-Net in place of nnU-Net's network.

Everything else (data loading, augmentation, loss, deep supervision, validation, checkpoints,
sliding-window prediction) is nnU-Net's own. Pretrained weights are verified and loaded in
``initialize`` (before any training step); their name and sha256 go into the plans stored with
the model (and so into every checkpoint and ``plans.json``), and into ``nnfm_pretrained.json``.
"""
import gc
import os
import pydoc
import re
from typing import Mapping, Optional, Tuple

import torch
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json, save_json
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
from nnunetv2.utilities.helpers import dummy_context
from torch._dynamo import OptimizedModule
from torch.nn.parallel import DistributedDataParallel

from nnfm.conventions import Recipe
from nnfm.errors import ConfigurationError
from nnfm.networks.from_plans import build_from_configuration
from nnfm.networks.stride_padding import check_divisible
from nnfm.paths import require_nnunet_paths
from nnfm.registry import get_encoder
from nnfm.training.cpu_threads import FAST_PATH_VARIABLE, adapts_cpu_threads, attach, fast_path_enabled
from nnfm.training.fold_guard import OneTrainingPerFold
from nnfm.training.run_overrides import apply_patch_and_batch_overrides, limit_trainer_validation_cases
from nnfm.training.schedule import FineTuneLRScheduler, FineTuneSchedule
from nnfm.training.validation import RecordsValidatedCheckpoint
from nnfm.weights.input_convention import check_fed_convention, recorded_convention
from nnfm.weights.nnunet_pretrained import check_pretrained_weights, pretrained_weights_argument
from nnfm.weights.provenance import model_folder_plans
from nnfm.weights.random_init import is_random_init
from nnfm_planners.dimensionality import check_network_fits_patch


class nnFMTrainer(OneTrainingPerFold, RecordsValidatedCheckpoint, nnUNetTrainer):
    # the encoder this trainer builds (nnfm/registry.py): network, preset, checkpoint families, default weights,
    # input convention and fine-tuning recipe all come from its registry entry
    encoder = "anatomix"
    use_pretrained = True
    # a variant's fine-tuning recipe: ``base_recipe`` (None: the encoder's, EncoderEntry.recipe) with the fields of
    # ``recipe_changes`` replaced (nnfm/conventions.py Recipe; documentation/design.md, "Fine-tuning recipes")
    base_recipe: Optional[Recipe] = None
    recipe_changes: Mapping = {}
    # how provenance names ``default_weights`` when they were used
    default_weights_origin = "the encoder's registry default (nnfm/registry.py)"

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        require_nnunet_paths(("nnUNet_preprocessed", "nnUNet_results"))
        # before nnU-Net writes anything into the fold folder: a running or finished fold is refused here
        self.refuse_busy_fold(plans, configuration, fold)
        plans, overrides = apply_patch_and_batch_overrides(plans, configuration)
        super().__init__(plans, configuration, fold, dataset_json, device)
        for line in overrides:
            self.print_to_log_file(line)
        recipe = self.recipe()
        self.initial_lr = recipe.initial_lr(self.use_pretrained)
        self.weight_decay = recipe.weight_decay
        self.enable_deep_supervision = recipe.deep_supervision
        self.loaded_family: Optional[str] = None  # checkpoint family of the loaded weights (sets the encoder lr)
        self._apply_budget_from_environment()
        # a checkpoint every epoch: an interrupted run loses at most one epoch (nnU-Net: every 50)
        self.save_every = 1
        self.pretrained_report = None
        self._resuming = False
        self._network_prepared = False

    # ---- budget -------------------------------------------------------------------------
    def _apply_budget_from_environment(self) -> None:
        """nnFM_EPOCHS / nnFM_ITERATIONS / nnFM_VAL_ITERATIONS override the budget (CPU runs, benchmarks)."""
        for env, attribute in (("nnFM_EPOCHS", "num_epochs"), ("nnFM_ITERATIONS", "num_iterations_per_epoch"),
                               ("nnFM_VAL_ITERATIONS", "num_val_iterations_per_epoch")):
            if os.environ.get(env):
                setattr(self, attribute, int(os.environ[env]))
                self.print_to_log_file(f"{attribute} = {getattr(self, attribute)} (from {env})")

    def do_split(self):
        """nnU-Net's split; ``nnFM_VAL_CASES`` keeps the first N validation cases (CPU benchmarks)."""
        tr_keys, val_keys = super().do_split()
        return tr_keys, limit_trainer_validation_cases(self, val_keys)

    # ---- encoder ------------------------------------------------------------------------
    @classmethod
    def encoder_entry(cls):
        return get_encoder(cls.encoder)

    @classmethod
    def network_class(cls) -> type:
        """The network the encoder's registry entry names (one place: EncoderEntry.network_class)."""
        return pydoc.locate(cls.encoder_entry().network_class)

    @classmethod
    def recipe(cls) -> Recipe:
        """The fine-tuning recipe: the encoder's (or ``base_recipe``) with this variant's ``recipe_changes``."""
        return (cls.base_recipe or cls.encoder_entry().recipe).with_changes(cls.recipe_changes)

    @property
    def encoder_family(self) -> tuple:
        return self.encoder_entry().families

    @property
    def default_weights(self) -> Optional[str]:
        """Registry weights used when neither nnFM_WEIGHTS nor the plans name any."""
        return self.encoder_entry().weights

    @classmethod
    def check_planned_encoder(cls, configuration_manager) -> None:
        """Refuse plans made for another encoder (training and nnUNetv2_predict both build through here)."""
        section = configuration_manager.configuration.get("nnfm")
        planned = (section or {}).get("encoder")
        if section is not None and planned is None:
            # nnFM's default plans (nnU-Net's planner, weights for nnU-Net's own network): an encoder's preset
            # built from them would silently replace the network and the weights they were planned for
            raise ConfigurationError(
                f"These plans are nnFM's default, nnU-Net's own network started from {section.get('weights')} "
                f"(nnFM_plan_and_preprocess without -e); {cls.__name__} builds encoder {cls.encoder!r} instead. "
                f"Fix: train them with -tr nnFMTrainer_nnUNetPlans, or plan for {cls.encoder!r} with "
                f"nnFM_plan_and_preprocess -d ID -e {cls.encoder} and train with "
                f"-p {get_encoder(cls.encoder).plans_name}.")
        if planned is None or planned == cls.encoder:
            return  # nnU-Net's own plans (no nnfm section): the trainer's preset is built
        try:
            fix = f"train these plans with -tr {get_encoder(planned).trainer}"
        except ConfigurationError:
            fix = f"encoder {planned!r} is not registered in this nnFM version"
        raise ConfigurationError(
            f"{cls.__name__} builds encoder {cls.encoder!r}, but these plans were made for encoder {planned!r} "
            f"(nnFMPlans_{planned}); building {cls.encoder!r} from them would silently change the network. Fix: "
            f"{fix}, or plan for {cls.encoder!r} with nnFM_plan_and_preprocess -d ID -e {cls.encoder} and train "
            f"with -p {get_encoder(cls.encoder).plans_name}.")

    # ---- network ------------------------------------------------------------------------
    @classmethod
    @adapts_cpu_threads
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True):
        cls.check_planned_encoder(configuration_manager)
        # plans of nnU-Net's own networks say nothing about ours: build the encoder's registry preset
        return build_from_configuration(cls.network_class(), configuration_manager, num_input_channels,
                                        num_output_channels, enable_deep_supervision,
                                        default_kwargs=cls.encoder_entry().kwargs())

    def _bare_network(self) -> torch.nn.Module:
        # by type, not is_ddp: configure_optimizers runs before nnU-Net wraps the network in DDP
        net = self.network.module if isinstance(self.network, DistributedDataParallel) else self.network
        return net._orig_mod if isinstance(net, OptimizedModule) else net

    def _get_deep_supervision_scales(self):
        if not self.enable_deep_supervision:
            return None
        net = self.network_class()(1, 1, True, **self.encoder_entry().kwargs()) \
            if self.network is None else self._bare_network()
        ndim = len(self.configuration_manager.patch_size)
        return [s[:ndim] for s in net.deep_supervision_scales]

    # ---- pretrained weights ---------------------------------------------------------------
    def weights_choice(self) -> Tuple[Optional[str], Optional[str]]:
        """(weights or None for random initialisation, where they were named): env nnFM_WEIGHTS > plans (nnFM
        planner -w) > ``default_weights``; where is None when nothing names any (or the variant trains from
        scratch)."""
        if not self.use_pretrained:
            return None, None
        planned = self.configuration_manager.configuration.get("nnfm") or {}
        # plans' weights are for the network they were planned for (nnU-Net's own plans record weights for
        # nnU-Net's network, encoder None: not for a registered encoder trained on those plans)
        plans_weights = planned.get("weights") if planned.get("encoder") == self.encoder else None
        for source, where in ((os.environ.get("nnFM_WEIGHTS"), "nnFM_WEIGHTS"),
                              (plans_weights, "plans (nnFM_plan_and_preprocess -w)"),
                              (self.default_weights, self.default_weights_origin)):
            if source:
                return (None if is_random_init(source) else source), where
        return None, None

    def weights_source(self) -> Optional[str]:
        """Where the encoder weights come from (:meth:`weights_choice`); None: random initialisation."""
        return self.weights_choice()[0]

    def _prepare_network(self) -> None:
        """Check the built network against the plans and load the pretrained encoder (once, not on resume).

        Called from ``configure_optimizers``: nnU-Net's ``initialize`` builds the network and then asks for the
        optimiser, so this is the last point before any optimiser exists. The weights' family (which sets a ViT
        encoder's lr) is therefore known when the parameter groups are made.
        """
        if self._network_prepared:
            return
        net = self._bare_network()
        check_network_fits_patch(net, self.configuration_manager.patch_size, self.configuration_name)
        if not getattr(net, "pad_to_stride", True):
            check_divisible(self.configuration_manager.patch_size, net.stride, net.min_size)
        if not self._resuming:
            self._load_pretrained_encoder(net)
        self._use_cpu_memory_format(net)
        self._network_prepared = True

    def _use_cpu_memory_format(self, net) -> None:
        """channels_last_3d on the CPU where the encoder's registry record says it is faster. Here, before nnU-Net
        wraps the network in DDP (which fixes its gradient buckets' strides) and before the optimiser exists."""
        entry = self.encoder_entry() if self.encoder else None
        if self.device.type != "cpu" or entry is None or not entry.cpu_channels_last or \
                len(self.configuration_manager.patch_size) != 3 or not fast_path_enabled():
            return
        # convolutions follow the weights' format; checkpoints load into it (copy_ keeps the layout)
        net.to(memory_format=torch.channels_last_3d)
        self.print_to_log_file("nnFM CPU: network in channels_last_3d (the encoder's registry entry: faster on the CPU)")

    def _load_pretrained_encoder(self, net) -> None:
        nnunet_file = pretrained_weights_argument()
        source = self.weights_source()
        if nnunet_file is not None:
            provenance = self._flagged_weights(net, nnunet_file)
        elif source is None:
            family = self.encoder_family[0]
            provenance = {"encoder": family, "weights": None, "sha256": None,
                          "note": "random initialisation (no pretrained weights)"}
            self.print_to_log_file("nnFM: encoder randomly initialised (no pretrained weights).")
        else:
            from nnfm.weights import load_pretrained, pretrained_target

            # the encoder, or what the network's checkpoints hold besides (PlainConvUNet: all but seg_layers)
            report = load_pretrained(pretrained_target(net), source, family=self.encoder_family,
                                     replan=self.replan_commands)
            # the plans must feed the network what the weights saw (ConfigurationError naming both otherwise)
            self._check_convention(net, report.input_convention, source)
            self.pretrained_report = report
            self.loaded_family = report.family
            self.print_to_log_file("nnFM pretrained weights:\n" + report.format())
            provenance = {"encoder": report.family, "weights": source, "sha256": report.sha256,
                          "input_convention": report.input_convention or getattr(net, "input_norm", None),
                          "path": str(report.path),
                          "via": "nnFM_WEIGHTS" if os.environ.get("nnFM_WEIGHTS") else "plans / registry default"}
        provenance["trainer"] = self.__class__.__name__
        provenance["fold"] = self.fold
        self._set_provenance(provenance)
        if self.local_rank == 0:
            full = dict(provenance, report=self.pretrained_report.to_dict() if self.pretrained_report else None)
            save_json(full, join(self.output_folder, "nnfm_pretrained.json"), sort_keys=False)

    def _flagged_weights(self, net, path) -> dict:
        """The provenance of ``nnUNetv2_train -pretrained_weights FILE``: nnU-Net loads the whole network (all but
        seg_layers) from FILE right after initialize(), so FILE is checked now (CheckpointMismatchError,
        ConfigurationError for another input convention) and nnFM's own load is skipped (nnU-Net overwrites it)."""
        sha = check_pretrained_weights(net, path)
        self._check_convention(net, recorded_convention(path), path)
        self.print_to_log_file(f"nnFM: -pretrained_weights {path} fits the network (sha256 {sha}).")
        return {"encoder": None, "weights": os.path.abspath(path), "sha256": sha,
                "via": "nnUNetv2_train -pretrained_weights (whole network except seg_layers)"}

    def _check_convention(self, net, recorded: Optional[str], source) -> None:
        """The plans must feed the network what the weights saw (ConfigurationError naming both otherwise)."""
        check_fed_convention(net, recorded, source, self.encoder, self.configuration_name, self.dataset_id)

    @property
    def dataset_id(self) -> str:
        """nnU-Net's id of the plans' dataset (``Dataset004_Name`` -> "4"), for the commands error messages give;
        "DATASET" for a name not of that form."""
        match = re.match(r"Dataset(\d+)_", self.plans_manager.dataset_name)
        return str(int(match.group(1))) if match else "DATASET"

    def replan_commands(self, vit_kwargs: dict) -> str:
        """The commands that plan this dataset for weights of another ViT size (``vit_kwargs``, from the file's
        shapes) and train this fold with this trainer: the advice of a size-mismatch CheckpointMismatchError."""
        import inspect
        import json

        from nnfm_planners.plan_and_preprocess import plan_command

        entry = self.encoder_entry()
        dataset_id = self.dataset_id
        train = (f"nnUNetv2_train {dataset_id} {self.configuration_name} {self.fold} -tr {self.__class__.__name__} "
                 f"-p {entry.plans_name}")
        if entry.configuration != "2d" or "vit_kwargs" not in inspect.signature(self.network_class()).parameters:
            return (f"    (encoder {entry.name!r} plans a fixed size: use weights of its size, or -e the encoder of the "
                    f"file's size: python -m nnfm.registry lists them)")
        source = self.weights_source()
        return (f"    $ {plan_command(dataset_id, entry.name, source, '--vit_kwargs', json.dumps(vit_kwargs))}\n"
                f"    $ {train}" + ("" if not os.environ.get("nnFM_WEIGHTS") else
                                    "   (the plans then name the weights: nnFM_WEIGHTS is not needed)"))

    def _set_provenance(self, provenance: dict) -> None:
        """This fold's provenance into the plans dict that nnU-Net saves in this fold's checkpoints
        (``init_args``); the model folder's plans.json gets every fold's, keyed by fold (on_train_start)."""
        for config in (self.configuration_manager.configuration,
                       self.plans_manager.plans["configurations"][self.configuration_name]):
            nnfm = config.setdefault("nnfm", {})
            nnfm["provenance"] = provenance
            nnfm["provenance_by_fold"] = {str(self.fold): provenance}

    def on_train_start(self):
        shared = join(self.output_folder_base, "plans.json")
        earlier = load_json(shared) if self.local_rank == 0 and isfile(shared) else None
        super().on_train_start()  # writes this run's plans to the shared plans.json, overwriting other folds'
        self._start_cpu_fast_path()
        if self.local_rank == 0:
            save_json(model_folder_plans(self.plans_manager.plans, earlier, self.configuration_name), shared,
                      sort_keys=False)

    def _start_cpu_fast_path(self) -> None:
        """On the CPU: threads from the CPU share this run gets (nnfm/training/cpu_threads.py), said in the log."""
        if self.device.type != "cpu":
            return
        share = attach(self._bare_network(), self.print_to_log_file)
        if share is None:
            self.print_to_log_file(f"nnFM CPU: fast path off ({FAST_PATH_VARIABLE}=0): nnU-Net's "
                                   f"{torch.get_num_threads()} intra-op threads")
            return
        share.start()
        self.print_to_log_file(f"nnFM CPU: augmentation processes {get_allowed_n_proc_DA()} (nnU-Net's choice: "
                               f"nnUNet_n_proc_DA), OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', 'unset')}")

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        # resuming restores every weight from nnU-Net's checkpoint: the pretrained file is not needed
        self._resuming = True
        super().load_checkpoint(filename_or_checkpoint)
        # keep the original pretrained provenance (init_args holds the plans saved with the checkpoint)
        saved = self.my_init_kwargs.get("plans", {}).get("configurations", {}) \
            .get(self.configuration_name, {}).get("nnfm", {}).get("provenance")
        if saved is not None:
            self._set_provenance(saved)

    # ---- optimisation -------------------------------------------------------------------
    def fine_tune_schedule(self) -> FineTuneSchedule:
        recipe = self.recipe()
        if not self.use_pretrained:  # no pretrained features to protect: no warm-up
            return FineTuneSchedule(self.num_epochs, decay=recipe.lr_decay)
        return FineTuneSchedule.from_fractions(self.num_epochs, recipe.head_warmup_fraction,
                                               recipe.full_warmup_fraction, recipe.lr_decay)

    def encoder_lr(self) -> float:
        """The encoder's initial lr: the recipe's for the loaded weights' family (random init: the decoder's)."""
        return self.recipe().encoder_lr.get(self.loaded_family, self.initial_lr)

    def configure_optimizers(self):
        self._prepare_network()
        return self.build_optimizer()

    def build_optimizer(self):
        """(optimizer, lr scheduler) of the recipe; the pretrained weights are already loaded."""
        recipe = self.recipe()
        net = self._bare_network()
        encoder_ids = {id(p) for p in net.encoder.parameters()}
        encoder = [p for p in net.parameters() if id(p) in encoder_ids]
        rest = [p for p in net.parameters() if id(p) not in encoder_ids]
        groups = [{"params": rest, "lr": self.initial_lr, "is_encoder": False},
                  {"params": encoder, "lr": self.encoder_lr(), "is_encoder": True}]
        if recipe.optimizer == "SGD":
            optimizer = torch.optim.SGD(groups, self.initial_lr, weight_decay=self.weight_decay,
                                        momentum=recipe.momentum, nesterov=recipe.nesterov)
        else:
            adam = torch.optim.Adam if recipe.optimizer == "Adam" else torch.optim.AdamW
            optimizer = adam(groups, self.initial_lr, weight_decay=self.weight_decay,
                             **({"betas": recipe.betas} if recipe.betas else {}))
        self.print_to_log_file(f"nnFM recipe: {recipe.summary()}; this run: lr {self.initial_lr:g}, encoder lr "
                               f"{self.encoder_lr():g}, weight decay {self.weight_decay:g}")
        return optimizer, FineTuneLRScheduler(optimizer, self.fine_tune_schedule())

    @property
    def grad_clip(self) -> float:
        """Max gradient norm: the recipe's, else nnU-Net's train_step value (12)."""
        clip = self.recipe().grad_clip
        return 12.0 if clip is None else clip

    def train_step(self, batch: dict) -> dict:
        """nnU-Net's train_step (nnunetv2 2.8.1 nnUNetTrainer.train_step) with the recipe's gradient clipping and
        this trainer's autocast (``_autocast``: nnU-Net's fp16 on CUDA; the ViT trainers' bf16)."""
        clip = self.grad_clip
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = self.loss(self.network(data), target)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), clip)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), clip)
            self.optimizer.step()
        return {"loss": loss.detach().cpu().numpy()}

    def _autocast(self):
        # nnU-Net's: fp16 autocast on CUDA only
        return torch.autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context()

    def on_train_epoch_start(self):
        frozen = self.fine_tune_schedule().encoder_frozen(self.current_epoch)
        self._set_encoder_frozen(frozen)
        super().on_train_epoch_start()  # sets train mode and the epoch's learning rates
        if frozen:
            self._bare_network().encoder.eval()  # keep pretrained batch-norm statistics while the encoder is frozen
            self.print_to_log_file("nnFM: encoder frozen (head warm-up)")

    # ---- freezing ----------------------------------------------------------------------------
    def _set_encoder_frozen(self, frozen: bool) -> None:
        """Freeze (no gradients) or unfreeze the encoder; under DDP rebuild the wrapper when this changes.

        Frozen parameters get ``requires_grad=False``, so they get no ``.grad``, which every torch optimiser
        (SGD with momentum, Adam, AdamW, ...) skips: no step, no momentum / moment update, no weight decay.
        DDP fixes the set of parameters it reduces when it is built (nnU-Net builds it in ``initialize``) and
        waits for a gradient of each in every backward, so toggling ``requires_grad`` under an existing
        wrapper fails at the next iteration ("Expected to have finished reduction in the prior iteration").
        The wrapper is therefore rebuilt around the same module at each freeze / unfreeze boundary (twice per
        run): parameters, optimiser state and the module nnU-Net wrapped (SyncBatchNorm, compiled or not) are
        untouched.
        """
        parameters = list(self._bare_network().encoder.parameters())
        if all(p.requires_grad != frozen for p in parameters):
            return
        for p in parameters:
            p.requires_grad_(not frozen)
        if self.is_ddp:
            self._rewrap_ddp()

    def _rewrap_ddp(self) -> None:
        """A new DDP wrapper (as nnU-Net's initialize builds it) that reduces the parameters needing gradients now."""
        module = self.network.module
        # drop the old wrapper before building the new one: its reducer's autograd hooks must not fire any more
        self.network = None
        gc.collect()
        device_ids = [self.local_rank] if self.device.type == "cuda" else None
        self.network = DistributedDataParallel(module, device_ids=device_ids)
