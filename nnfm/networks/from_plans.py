"""Build an nnFM network from an nnU-Net configuration, nnFM plans or plain nnUNetPlans alike."""
import pydoc

from torch import nn


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def build_from_configuration(network_class: type, configuration_manager, num_input_channels: int,
                             num_output_channels: int, deep_supervision: bool) -> nn.Module:
    """Use the plans' arch_kwargs when the plans were made for ``network_class``.

    Plans made for another network (e.g. nnU-Net's PlainConvUNet in nnUNetPlans) say nothing
    about ours, so the network is built with its defaults (it pads inputs to its stride).
    """
    planned_class = pydoc.locate(configuration_manager.network_arch_class_name)
    kwargs = {}
    if planned_class is not None and issubclass(planned_class, network_class):
        kwargs = dict(configuration_manager.network_arch_init_kwargs)
    return network_class(input_channels=num_input_channels, num_classes=num_output_channels,
                         deep_supervision=deep_supervision, **kwargs)
