"""Build an nnFM network the way nnU-Net builds any network: through ``get_network_from_plans``.

nnU-Net (nnunetv2/utilities/get_network_from_plans.py) locates the plans' ``network_class_name``, resolves
``arch_kwargs_req_import``, builds the network and then applies the network's own ``initialize`` hook to
every submodule (``network.apply(network.initialize)``). nnFM uses that same function, so a network built
by an nnFM trainer starts from exactly the initialisation nnU-Net would give it; pretrained encoder weights
are loaded afterwards (``nnFMTrainer.initialize``), so they overwrite the hook's init where they exist.
"""
import pydoc
from typing import Optional, Sequence

from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from torch import nn


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def build_network(network_class_name: str, arch_kwargs: dict, arch_kwargs_req_import: Sequence[str],
                  num_input_channels: int, num_output_channels: int, deep_supervision: bool) -> nn.Module:
    """nnU-Net's ``get_network_from_plans`` with ``allow_init=True``: build, then ``apply(initialize)``."""
    return get_network_from_plans(network_class_name, dict(arch_kwargs), list(arch_kwargs_req_import or []),
                                  num_input_channels, num_output_channels, allow_init=True,
                                  deep_supervision=deep_supervision)


def planned_for(network_class: type, configuration_manager) -> bool:
    """True when the plans' network class is ``network_class`` (or a subclass): its arch_kwargs are ours."""
    planned = pydoc.locate(configuration_manager.network_arch_class_name)
    return isinstance(planned, type) and issubclass(planned, network_class)


def build_from_configuration(network_class: type, configuration_manager, num_input_channels: int,
                             num_output_channels: int, deep_supervision: bool,
                             default_kwargs: Optional[dict] = None) -> nn.Module:
    """Use the plans' class name and arch_kwargs when the plans were made for ``network_class``.

    Plans made for another network (e.g. nnU-Net's PlainConvUNet in nnUNetPlans) say nothing about ours,
    so ``network_class`` is built with ``default_kwargs`` (its defaults when None), initialised the same way.
    """
    if planned_for(network_class, configuration_manager):
        return build_network(configuration_manager.network_arch_class_name,
                             configuration_manager.network_arch_init_kwargs,
                             configuration_manager.network_arch_init_kwargs_req_import,
                             num_input_channels, num_output_channels, deep_supervision)
    return build_network(class_path(network_class), default_kwargs or {}, [], num_input_channels,
                         num_output_channels, deep_supervision)
