"""nnFMTrainer_DropGen: nnU-Net's own network and recipe, fed the image plus a frozen encoder's dense features.

    nnUNetv2_plan_and_preprocess -d DATASET -c 3d_fullres                       (nnU-Net's own plans, nnUNetPlans)
    nnUNetv2_train DATASET 3d_fullres FOLD -tr nnFMTrainer_DropGen               (-p nnUNetPlans)
    nnUNetv2_predict -i IN -o OUT -d DATASET -c 3d_fullres -tr nnFMTrainer_DropGen -f FOLD

DropGen (Diaz, Golland, Adalsteinsson, Dey, arXiv 2604.02564; code sebodiaz/DropGen, MONAI) trains a U-Net on the
image concatenated with anatomix's dense features and drops whole input channels in training. Here the U-Net is the
one nnU-Net plans for the dataset, trained with nnUNetTrainer's recipe, loss, augmentation and prediction; the
frozen encoder runs inside the network's forward (nnfm/networks/feature_input.py, which states the recipe with its
sources), so training, validation and ``nnUNetv2_predict`` compute the features identically.

Choices (environment, else class attributes; the run's choice is written into the plans, which the predictor reads):
``nnFM_FEATURE_ENCODER`` (``feature_encoder``, default ``anatomix``): a registered 3D encoder with dense features;
``nnFM_FEATURE_WEIGHTS`` (``feature_weights``; default: the encoder's registry default, for anatomix nnFM's embedded
``anatomix_synth_nnfm``, offline), a registry name, a file, or ``random``; ``nnFM_WEIGHTS`` is taken when
``nnFM_FEATURE_WEIGHTS`` is not set (nnFM_benchmark passes its ``--weights`` so). nnU-Net's network always starts
from nnU-Net's initialisation. Weights whose input convention cannot be produced from nnU-Net's normalised input are
refused before training (nnfm/networks/feature_input.py ``check_feature_convention``).

Recorded: the plans' configuration gets ``nnfm_feature_input`` (encoder, its network class and preset, weights,
sha256, input convention, intensity window, feature normalisation, dropout recipe); the model folder's ``plans.json``
(and so an exported zip) carries it, and ``build_network_architecture`` rebuilds the wrapper from it alone. The
fold's ``nnfm_pretrained.json`` and checkpoints carry the provenance; the frozen encoder's weights are in every
checkpoint (``features.*``), so prediction needs no download. The feature pass is timed and logged every epoch and
summarised in ``nnfm_feature_cost.json``.
"""
import json
import os
import pydoc
import time
from typing import Optional, Tuple

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json, save_json
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnfm.errors import ConfigurationError
from nnfm.networks.feature_input import (DROPGEN_DROPOUT, DROPGEN_RECIPE, FEATURE_INPUT_KEY, FeatureInputNetwork,
                                         build_feature_encoder, check_feature_convention)
from nnfm.training.cpu_threads import adapts_cpu_threads
from nnfm.weights.nnunet_pretrained import check_pretrained_weights, pretrained_weights_argument
from nnfm.weights.random_init import is_random_init
from nnfm_trainers.nnfm_nnunet_plans_trainer import nnFMTrainer_nnUNetPlans
from nnfm_trainers.nnfm_trainer import nnFMTrainer

ENCODER_ENV = "nnFM_FEATURE_ENCODER"
WEIGHTS_ENV = "nnFM_FEATURE_WEIGHTS"
# what a model folder's record must agree on with a new fold's choice (all folds share one plans.json and network)
RECORD_IDENTITY = ("encoder", "weights", "sha256", "input_convention", "feature_norm", "dropout")


class nnFMTrainer_DropGen(nnFMTrainer_nnUNetPlans):
    feature_encoder = "anatomix"
    feature_weights: Optional[str] = None  # None: the encoder's registry default weights
    feature_dropout = DROPGEN_DROPOUT       # sebodiaz/DropGen options.py --dropout_prob 0.75
    feature_norm = "instance"              # sebodiaz/DropGen src/misc.py: InstanceNorm3d(16) after the encoder

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        # nnU-Net records the named arguments of __init__ (init_args in every checkpoint): no *args here
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.feature_record: Optional[dict] = None
        self.feature_report = None
        self._train_started = None
        self._train_seconds = 0.0
        self.feature_cost = []  # one dict per epoch

    # ---- the choice of this run ----------------------------------------------------------------------------
    def requested_feature_encoder(self) -> str:
        return os.environ.get(ENCODER_ENV) or self.feature_encoder

    def requested_feature_weights(self, entry) -> Optional[str]:
        """nnFM_FEATURE_WEIGHTS > nnFM_WEIGHTS > ``feature_weights`` > the encoder's default; None: random."""
        source = os.environ.get(WEIGHTS_ENV) or os.environ.get("nnFM_WEIGHTS") or self.feature_weights or entry.weights
        return None if is_random_init(source) else source

    def weights_choice(self) -> Tuple[Optional[str], Optional[str]]:
        # nnU-Net's network: nnU-Net's initialisation; the pretrained weights are the frozen encoder's
        return None, None

    def new_feature_record(self) -> dict:
        """What this run feeds nnU-Net's network: encoder, weights, convention, window, recipe (checked, measured)."""
        from nnfm.planning.intensity import measure_preprocessed_window
        from nnfm.registry import get_encoder
        from nnfm.weights import resolve_checkpoint
        from nnfm.weights.input_convention import weights_convention

        entry = get_encoder(self.requested_feature_encoder())
        network_class = pydoc.locate(entry.network_class)
        if entry.configuration != "3d_fullres" or not hasattr(network_class, "dense_features"):
            from nnfm.features.extract import feature_encoders
            raise ConfigurationError(f"Encoder {entry.name!r} gives no dense 3D features; {ENCODER_ENV} takes one "
                                     f"of: {', '.join(feature_encoders())}.")
        patch = list(self.configuration_manager.patch_size)
        if len(patch) != 3:
            raise ConfigurationError(f"{self.__class__.__name__} feeds a 3D encoder's features; configuration "
                                     f"{self.configuration_name!r} is {len(patch)}D. Fix: -c 3d_fullres "
                                     f"(or 3d_lowres).")
        source = self.requested_feature_weights(entry)
        schemes = list(self.configuration_manager.normalization_schemes)
        use_mask = [bool(u) for u in self.configuration_manager.use_mask_for_norm]
        convention = (weights_convention(source) if source else None) or entry.input_convention.name
        check_feature_convention(convention, network_class, schemes, use_mask,
                                 f"Weights {source}" if source else f"Encoder {entry.name!r}'s weights")
        sha = resolve_checkpoint(source)[1] if source else None
        record = {"encoder": entry.name, "network_class": entry.network_class, "encoder_kwargs": entry.kwargs(),
                  "weights": source, "sha256": sha, "input_convention": convention,
                  "input_window": None, "zero_is_background": use_mask}
        from nnfm.conventions import get_convention
        if get_convention(convention).output_range is not None:
            record["input_window"] = measure_preprocessed_window(self.preprocessed_dataset_folder, use_mask)
            record["input_window_source"] = ("0.5 / 99.5 percentiles of each preprocessed (nnU-Net-normalised) case, "
                                             "median over up to 20 cases of the dataset (nnfm/planning/intensity.py)")
        features = build_feature_encoder(entry.network_class, entry.kwargs(), len(schemes), convention, patch,
                                         record["input_window"], use_mask)
        record.update(feature_channels=int(features.dense_feature_channels), feature_norm=self.feature_norm,
                      dropout=float(self.feature_dropout),
                      dropout_channels=DROPGEN_RECIPE["dropout_channels"], dropout_unit=DROPGEN_RECIPE["dropout_unit"],
                      rescale=DROPGEN_RECIPE["rescale"], inference=DROPGEN_RECIPE["inference"],
                      recipe_source=DROPGEN_RECIPE["source"], trainer=self.__class__.__name__)
        return record

    def settle_feature_record(self) -> dict:
        """The model folder's record when a fold already wrote one (every fold shares its plans.json and so its
        network), else a new one; a new fold asking for other features is refused."""
        record = self.new_feature_record()
        model_plans = join(self.output_folder_base, "plans.json")
        existing = ((load_json(model_plans).get("configurations", {}).get(self.configuration_name, {})
                     .get(FEATURE_INPUT_KEY)) if isfile(model_plans) else None)
        if existing is not None:
            differs = {k: (existing.get(k), record.get(k)) for k in RECORD_IDENTITY if existing.get(k) != record.get(k)}
            if differs:
                raise ConfigurationError(
                    f"{self.output_folder_base} holds folds trained on other feature input "
                    f"({'; '.join(f'{k}: {a!r} there, {b!r} now' for k, (a, b) in differs.items())}). All folds of "
                    f"a model share one network (plans.json). Fix: set {ENCODER_ENV} / {WEIGHTS_ENV} as for those "
                    f"folds, or train into another results folder (nnUNet_results) or trainer class.")
            record = existing  # the same window for every fold, even if the preprocessed data were redone
        self.feature_record = record
        for config in (self.configuration_manager.configuration,
                       self.plans_manager.plans["configurations"][self.configuration_name]):
            config[FEATURE_INPUT_KEY] = record
        return record

    def initialize(self):
        if not self.was_initialized:
            record = self.settle_feature_record()
            window = f", window {record['input_window']}" if record["input_window"] else ""
            self.print_to_log_file(
                f"nnFM feature input: image + {record['feature_channels']} channels of frozen {record['encoder']} "
                f"(weights {record['weights'] or 'random'}, sha256 {record['sha256']}, input "
                f"{record['input_convention']}{window}), {record['feature_norm']}-normalised; channel dropout "
                f"p={record['dropout']} over {record['dropout_channels']} in training, none at inference "
                f"({record['recipe_source']})")
        super().initialize()

    # ---- network ----------------------------------------------------------------------------------------------
    @classmethod
    @adapts_cpu_threads
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True):
        """nnU-Net's network for the plans, wrapped with the frozen encoder the plans' ``nnfm_feature_input`` names
        (training and nnUNetv2_predict both come here; the predictor's plans are the model folder's plans.json)."""
        cls.check_planned_encoder(configuration_manager)
        record = configuration_manager.configuration.get(FEATURE_INPUT_KEY)
        if record is None:
            raise ConfigurationError(
                f"{cls.__name__} builds its network from the plans' '{FEATURE_INPUT_KEY}', which these plans lack. "
                f"Training writes it (into the model folder's plans.json, which nnUNetv2_predict reads); a model "
                f"folder without it was not trained by {cls.__name__}.")
        features = build_feature_encoder(record["network_class"], record["encoder_kwargs"], num_input_channels,
                                         record["input_convention"], configuration_manager.patch_size,
                                         record.get("input_window"), record.get("zero_is_background"))
        if features.dense_feature_channels != record["feature_channels"]:
            raise ConfigurationError(f"{record['encoder']} gives {features.dense_feature_channels} feature channels "
                                     f"here, the plans say {record['feature_channels']}: this nnFM version builds "
                                     f"another encoder than the one the model was trained with.")
        network = nnUNetTrainer.build_network_architecture(
            plans_manager, configuration_manager, num_input_channels + record["feature_channels"],
            num_output_channels, enable_deep_supervision)
        return FeatureInputNetwork(features, network, num_input_channels, record["dropout"], record["feature_norm"])

    def _feature_input_network(self) -> FeatureInputNetwork:
        """The wrapper nnU-Net holds (inside DDP / torch.compile)."""
        return nnFMTrainer._bare_network(self)

    def _bare_network(self):
        """nnU-Net's trainable network inside the wrapper: nnFM's optimiser groups and freezing work on it, so the
        optimiser never holds the frozen encoder's parameters."""
        return self._feature_input_network().network

    # ---- weights: the frozen encoder's --------------------------------------------------------------------------
    def _prepare_network(self) -> None:
        if self._network_prepared:
            return
        if not self._resuming:  # a resumed run restores the encoder from nnU-Net's checkpoint (features.*)
            self._load_feature_weights()
        self._network_prepared = True

    def _load_feature_weights(self) -> None:
        from nnfm.registry import get_encoder
        from nnfm.weights import load_pretrained, pretrained_target
        from nnfm.weights.input_convention import check_fed_convention

        record, wrapper = self.feature_record, self._feature_input_network()
        if record["weights"] is not None:
            report = load_pretrained(pretrained_target(wrapper.features), record["weights"],
                                     family=get_encoder(record["encoder"]).families)
            if report.sha256 != record["sha256"]:
                raise ConfigurationError(f"Feature weights {record['weights']} have sha256 {report.sha256}; the model "
                                         f"folder's plans record {record['sha256']}. Restore that file, or train into "
                                         f"another results folder.")
            check_fed_convention(wrapper.features, report.input_convention, record["weights"], record["encoder"],
                                 self.configuration_name, self.dataset_id)
            self.feature_report = report
            self.print_to_log_file("nnFM frozen feature encoder weights:\n" + report.format())
        else:
            self.print_to_log_file(f"nnFM: frozen feature encoder {record['encoder']} randomly initialised "
                                   f"(no weights).")
        wrapper.features.requires_grad_(False)
        wrapper.features.eval()
        provenance = {"encoder": self.feature_report.family if self.feature_report else record["encoder"],
                      "weights": record["weights"], "sha256": record["sha256"],
                      "input_convention": record["input_convention"],
                      "via": "frozen feature encoder: image + its features into nnU-Net's network (nnU-Net's "
                             "initialisation)",
                      "feature_input": {k: v for k, v in record.items() if k != "encoder_kwargs"},
                      "trainer": self.__class__.__name__, "fold": self.fold}
        if self.feature_report is not None:
            provenance["path"] = str(self.feature_report.path)
        flagged = pretrained_weights_argument()
        if flagged is not None:  # nnU-Net loads FILE over the whole wrapper, the frozen encoder included
            sha = check_pretrained_weights(wrapper, flagged)
            provenance["pretrained_weights"] = {
                "weights": os.path.abspath(flagged), "sha256": sha,
                "via": "nnUNetv2_train -pretrained_weights (whole network except seg_layers, frozen encoder included)"}
            self.print_to_log_file(f"nnFM: -pretrained_weights {flagged} fits the network (sha256 {sha}).")
        self._set_provenance(provenance)
        if self.local_rank == 0:
            full = dict(provenance, report=self.feature_report.to_dict() if self.feature_report else None)
            save_json(full, join(self.output_folder, "nnfm_pretrained.json"), sort_keys=False)

    # ---- cost of the feature pass -------------------------------------------------------------------------------
    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        wrapper = self._feature_input_network()
        wrapper.timing = True
        wrapper.pop_feature_seconds()
        self._train_started = time.perf_counter()

    def on_train_epoch_end(self, train_outputs):
        self._train_seconds = time.perf_counter() - self._train_started
        super().on_train_epoch_end(train_outputs)

    def on_epoch_end(self):
        timing = self._feature_input_network().pop_feature_seconds()
        (train_s, train_n), (val_s, val_n) = timing["train"], timing["eval"]
        cost = {"epoch": self.current_epoch, "train_iterations": train_n,
                "feature_ms_per_train_iteration": round(1000 * train_s / max(train_n, 1), 2),
                "train_ms_per_iteration": round(1000 * self._train_seconds / max(train_n, 1), 2),
                "feature_share_of_train_time": round(train_s / self._train_seconds, 4) if self._train_seconds else None,
                "val_iterations": val_n, "feature_ms_per_val_iteration": round(1000 * val_s / max(val_n, 1), 2)}
        self.feature_cost.append(cost)
        self.print_to_log_file(
            f"nnFM feature pass (frozen {self.feature_record['encoder']}, batch {self.batch_size}, patch "
            f"{list(self.configuration_manager.patch_size)}): {cost['feature_ms_per_train_iteration']:.1f} ms per "
            f"training iteration of {cost['train_ms_per_iteration']:.1f} ms "
            f"({100 * (cost['feature_share_of_train_time'] or 0):.1f}%), "
            f"{cost['feature_ms_per_val_iteration']:.1f} ms per validation iteration")
        super().on_epoch_end()

    def on_train_end(self):
        super().on_train_end()
        if self.local_rank == 0 and self.feature_cost:
            mean = {k: float(np.mean([c[k] for c in self.feature_cost if c[k] is not None] or [np.nan]))
                    for k in ("feature_ms_per_train_iteration", "train_ms_per_iteration",
                              "feature_share_of_train_time", "feature_ms_per_val_iteration")}
            summary = {"encoder": self.feature_record["encoder"], "weights": self.feature_record["weights"],
                       "device": str(self.device), "batch_size": self.batch_size,
                       "patch_size": list(self.configuration_manager.patch_size),
                       "mean_over_epochs": mean, "epochs": self.feature_cost}
            with open(join(self.output_folder, "nnfm_feature_cost.json"), "w") as handle:
                json.dump(summary, handle, indent=1)


class nnFMTrainer_DropGen_noDrop(nnFMTrainer_DropGen):
    """Ablation: the same image + frozen features, no channel dropout (DropGen's method without its dropout)."""
    feature_dropout = 0.0


class nnFMTrainer_DropGen_p025(nnFMTrainer_DropGen):
    """A lower drop rate than the authors' 0.75 (issue 28): at 0.75 the image itself is dropped in 3 of 4 samples,
    which few-shot budgets of a few hundred iterations cannot afford (screening: 0.436 vs nnUNetTrainer's 0.759)."""
    feature_dropout = 0.25
