"""3D Primus ViT trainers (nnssl / OpenMind Primus-M encoder + multi-scale Primus-style decoder).

- ``nnFMTrainer_Primus``: Primus-M with the OpenMind MAE weights (``primus_m_openmind_mae``) by default.
- ``nnFMTrainer_Primus_scratch``: the same network and schedule, random initialisation.
- ``nnFMTrainer_PrimusTiny`` (+ ``_scratch``): embed 48, depth 4 for CPU runs and tests; no published
  weights (random unless ``nnFM_WEIGHTS`` names an nnssl-layout checkpoint).
Short budgets: ``nnFM_EPOCHS=N``.

Optimisation, bf16 autocast, gradient clipping, drop path, budgets and provenance come from
``nnFMViTTrainer``; this file only says which network is built and how.
"""
from nnfm.networks.from_plans import build_network, planned_for
from nnfm.training.cpu_threads import adapts_cpu_threads
from nnfm_trainers.nnfm_vit_trainer import nnFMViTTrainer


class nnFMTrainer_Primus(nnFMViTTrainer):
    encoder = "primus_m"

    @classmethod
    @adapts_cpu_threads
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = False):
        """Plans made for this network carry its arch_kwargs; other plans (e.g. nnUNetPlans) get the preset.
        The token grid always follows the configuration's patch size (sliding-window tiles have that size)."""
        cls.check_planned_encoder(configuration_manager)
        kwargs, name, req_import = cls.encoder_entry().kwargs(), cls.encoder_entry().network_class, []
        if planned_for(cls.network_class(), configuration_manager):
            kwargs = dict(configuration_manager.network_arch_init_kwargs)
            name = configuration_manager.network_arch_class_name
            req_import = configuration_manager.network_arch_init_kwargs_req_import
        kwargs["input_shape"] = list(configuration_manager.patch_size)
        # nnU-Net's get_network_from_plans: build, then the network's initialize hook (He for the convs)
        return build_network(name, kwargs, req_import, num_input_channels, num_output_channels, False)

    def set_deep_supervision_enabled(self, enabled: bool):
        pass  # one full-resolution output, as nnU-Net's own Primus trainers


class nnFMTrainer_Primus_scratch(nnFMTrainer_Primus):
    use_pretrained = False


class nnFMTrainer_PrimusTiny(nnFMTrainer_Primus):
    encoder = "primus_tiny"


class nnFMTrainer_PrimusTiny_scratch(nnFMTrainer_PrimusTiny):
    use_pretrained = False

