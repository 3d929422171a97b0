"""nnFMTrainer_nnUNetPlans: nnU-Net's own dataset-specific network and recipe, started from pretrained weights.

    nnUNetv2_train DATASET 3d_fullres FOLD -tr nnFMTrainer_nnUNetPlans                      (-p nnUNetPlans)
    nnFM_WEIGHTS=FILE nnUNetv2_train DATASET 3d_fullres FOLD -tr nnFMTrainer_nnUNetPlans    (other weights)

The network is what nnU-Net plans for the dataset (``nnUNetPlans``: PlainConvUNet or ResidualEncoderUNet, any number
of stages, any kernel sizes), built by nnU-Net's ``get_network_from_plans`` and initialised as nnU-Net does. Then
every tensor of FILE whose name and shape fit is loaded (nnfm/weights/shape_fit.py: input channels and 1-thick
kernels adapted; the rest keeps nnU-Net's initialisation, each with its reason in the log and in
``nnfm_pretrained.json``). The weights are ``nnFM_WEIGHTS`` > the plans' ``nnfm.weights``
(``nnFM_plan_and_preprocess -d ID -w FILE``) > for a PlainConvUNet nnFM's embedded ``plainconv_unet_synth_nnfm``
(the plainconv_unet encoder's registry default; ``random`` for none). FILE is any PlainConvUNet / ResidualEncoderUNet state dict: an nnU-Net
``checkpoint_final.pth`` of another dataset, an nnssl ResEnc release, or nnFM's pretrained networks. nnU-Net 2.8.1's
``-pretrained_weights`` needs the very same network (given, nnU-Net's load wins: FILE is checked and recorded, and
no shape-fitting load runs); nnU-Net master's ``DynamicPretrainedTrainer`` (unreleased) does this reconciliation at
load time.

Everything else is nnUNetTrainer's: its recipe (SGD lr 1e-2, momentum 0.99 Nesterov, weight decay 3e-5, poly;
nnunetv2 2.8.1 nnUNetTrainer.configure_optimizers), deep supervision, loss, augmentation, validation and
prediction, so that against ``nnUNetTrainer`` the initialisation is the only difference. nnFM's budgets
(``nnFM_EPOCHS`` / ``nnFM_ITERATIONS``) and provenance apply as for every nnFM trainer. The weights' input convention
must be what nnU-Net's normalisation gives (``nnunet``, or ``zscore`` where every channel is z-scored per image).
"""
from typing import Optional

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnfm.errors import ConfigurationError
from nnfm.registry import get_encoder
# nnUNetTrainer's recipe, stated once beside nnU-Net's networks (nnunetv2 2.8.1 nnUNetTrainer.py; its source there)
from nnfm.networks.dna_unet import NNUNET_RECIPE
from nnfm.networks.resenc_segmentation import NNSSL_RECIPE
from nnfm.training.cpu_threads import adapts_cpu_threads
from nnfm.weights.families import NNUNET_NETWORK_ENCODERS
from nnfm.weights.input_convention import check_nnunet_normalisation_fits
from nnfm.weights.nnunet_pretrained import pretrained_weights_argument
from nnfm_trainers.nnfm_trainer import nnFMTrainer


class nnFMTrainer_nnUNetPlans(nnFMTrainer):
    encoder = None  # nnU-Net's own network, not a registered encoder preset
    base_recipe = NNUNET_RECIPE
    shape_fit_report = None
    default_weights_origin = "default of the plans' network (nnfm/registry.py)"

    # ---- network: nnU-Net's ------------------------------------------------------------------------
    @classmethod
    def check_planned_encoder(cls, configuration_manager) -> None:
        planned = (configuration_manager.configuration.get("nnfm") or {}).get("encoder")
        if planned is not None:
            raise ConfigurationError(
                f"nnFMTrainer_nnUNetPlans trains nnU-Net's own network from nnU-Net's plans; these plans were made by "
                f"nnFM for encoder {planned!r}. Fix: -p nnUNetPlans (nnUNetv2_plan_and_preprocess -d ID), or train "
                f"these plans with the encoder's trainer (python -m nnfm.registry lists it).")

    @classmethod
    @adapts_cpu_threads
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True):
        cls.check_planned_encoder(configuration_manager)
        return nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                        num_output_channels, enable_deep_supervision)

    def _get_deep_supervision_scales(self):
        return nnUNetTrainer._get_deep_supervision_scales(self)

    # ---- weights: fitted by shape ----------------------------------------------------------------------
    @property
    def encoder_family(self) -> tuple:
        return ()  # any PlainConvUNet / ResidualEncoderUNet state dict: matched by name and shape, not by family

    @property
    def default_weights(self) -> Optional[str]:
        """The registry default of the nnFM encoder that is the plans' network at nnFM's fixed topology
        (``NNUNET_NETWORK_ENCODERS``; PlainConvUNet: nnFM's embedded synthetic-data weights); None for others."""
        network = self.configuration_manager.network_arch_class_name.rsplit(".", 1)[-1]
        encoder = NNUNET_NETWORK_ENCODERS.get(network)
        return get_encoder(encoder).weights if encoder is not None else None

    def _prepare_network(self) -> None:
        if self._network_prepared:
            return
        if not self._resuming:
            self._load_pretrained_encoder(self._bare_network())
        self._network_prepared = True

    def _load_pretrained_encoder(self, net) -> None:
        from batchgenerators.utilities.file_and_folder_operations import join, save_json

        from nnfm.weights.loading import resolve_checkpoint
        from nnfm.weights.shape_fit import load_fitting

        nnunet_file = pretrained_weights_argument()
        source, where = self.weights_choice()
        if nnunet_file is not None:
            provenance = self._flagged_weights(net, nnunet_file)
        elif source is None:
            if not self.use_pretrained:
                why = f"{self.__class__.__name__} trains from nnU-Net's initialisation"
            elif where is None:
                why = f"nnFM has no pretrained weights for {self.configuration_manager.network_arch_class_name}"
            else:
                why = f"{where} says random"
            provenance = {"encoder": None, "weights": None, "sha256": None,
                          "note": f"nnU-Net's own initialisation ({why}; nnFM_WEIGHTS=FILE names weights)"}
            self.print_to_log_file(f"nnFM: nnU-Net's network with nnU-Net's initialisation ({why}).")
        else:
            path, sha = resolve_checkpoint(source)
            report = load_fitting(net, path, sha, source)
            self._check_convention(net, report.input_convention, source)
            self.shape_fit_report = report
            self.print_to_log_file("nnFM pretrained weights:\n" + report.format())
            provenance = {"encoder": None, "weights": source, "sha256": sha, "path": str(path),
                          "input_convention": report.input_convention,
                          "loaded_fraction": round(report.loaded_fraction, 4),
                          "via": f"{where}, shape-fitting load into the plans' network"}
        provenance.update(trainer=self.__class__.__name__, fold=self.fold)
        self._set_provenance(provenance)
        if self.local_rank == 0:
            full = dict(provenance, report=self.shape_fit_report.to_dict() if self.shape_fit_report else None)
            save_json(full, join(self.output_folder, "nnfm_pretrained.json"), sort_keys=False)

    def _check_convention(self, net, recorded: Optional[str], source) -> None:
        """nnU-Net's network sees nnU-Net's normalisation: weights pretrained on other intensities are refused."""
        check_nnunet_normalisation_fits(recorded, self.configuration_manager.normalization_schemes,
                                        self.configuration_manager.use_mask_for_norm, source)


class nnFMTrainer_nnUNetPlans_scratch(nnFMTrainer_nnUNetPlans):
    """nnU-Net's initialisation whatever nnFM_WEIGHTS says: nnUNetTrainer's run through nnFM's budgets."""
    use_pretrained = False


class nnFMTrainer_nnUNetPlans_nnssl(nnFMTrainer_nnUNetPlans):
    """nnU-Net master's recipe for fine-tuning pretrained weights (PretrainedTrainer, NNSSL_RECIPE with its source:
    SGD lr 1e-3, 5% linear warm-up, then poly) instead of nnUNetTrainer's lr 1e-2 from the first step, which can wash
    pretrained filters out; deep supervision kept, as nnU-Net's own network is trained with it."""
    base_recipe = NNSSL_RECIPE
    recipe_changes = {"deep_supervision": True}
