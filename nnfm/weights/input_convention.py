"""The input convention travels with the weights: recorded in every file nnFM writes, stated by every registry
entry, and checked against what the network is fed, at planning and at load.

- A ``.pth`` written by nnFM (pretraining exports) is ``{"state_dict": ..., "nnfm_input_convention": NAME}``;
  a ``.safetensors`` written by nnFM (embedded weights) has ``NAME`` in its metadata under the same key; an nnU-Net
  checkpoint of an nnFM model (``checkpoint_final.pth``) has it in the plans it carries (``init_args``: the
  configuration's ``nnfm.input_convention``, written by the planner).
- A registry weights entry states ``input_convention`` (nnfm/weights/registry.py).
- A file that records none (the authors' own files, older nnFM exports) is taken to have the encoder's convention.

The planner gives the network the weights' convention where the network can apply it (nnfm/conventions.py; the
network class lists what it can apply in ``INPUT_NORMS``): that is the exact conversion, stored in the plans as
``arch_kwargs["input_norm"]``. A convention the network cannot apply, or plans that feed the network another one
than the weights saw, is refused with both conventions and the fix named.
"""
import pydoc
from pathlib import Path
from typing import Optional

from nnfm.conventions import NNUNET, ZSCORE, InputConvention, get_convention
from nnfm.errors import ConfigurationError

CONVENTION_KEY = "nnfm_input_convention"


def with_convention(state: dict, convention: str) -> dict:
    """What nnFM's ``.pth`` exports hold: the state dict and the convention it was pretrained with."""
    get_convention(convention)  # a known name, or ValueError
    return {"state_dict": state, CONVENTION_KEY: convention}


def recorded_convention(path, checkpoint=None) -> Optional[str]:
    """The convention a file records (``checkpoint``: its already-read content, to avoid reading it twice)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return (handle.metadata() or {}).get(CONVENTION_KEY)
    if checkpoint is None:
        from nnfm.weights.checkpoint_io import read_checkpoint
        checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict):
        return None
    value = checkpoint.get(CONVENTION_KEY)
    init_args = checkpoint.get("init_args")
    if value is None and isinstance(init_args, dict):  # nnU-Net's checkpoint: the plans it was trained with
        configuration = (init_args.get("plans") or {}).get("configurations", {}).get(init_args.get("configuration"))
        value = ((configuration or {}).get("nnfm") or {}).get("input_convention")
    return value if isinstance(value, str) else None


def weights_convention(source) -> Optional[str]:
    """The convention of ``source`` (registry name or file) without loading it into a network; None if it records
    none or is random initialisation / a registry download that is not cached yet and states none."""
    from nnfm.weights.random_init import is_random_init
    from nnfm.weights.registry import get_weights_entry

    if is_random_init(source):
        return None
    entry = get_weights_entry(str(source))
    if entry is not None:
        return entry.input_convention
    path = Path(str(source)).expanduser()
    return recorded_convention(path) if path.is_file() else None


def planned_convention(encoder_entry, weights) -> InputConvention:
    """The convention the planner gives encoder ``encoder_entry``'s network for ``weights``: the weights' own where
    they record one, else the encoder's. ConfigurationError when the network cannot apply it."""
    name = weights_convention(weights) or encoder_entry.input_convention.name
    network = pydoc.locate(encoder_entry.network_class)
    if name not in network.INPUT_NORMS:
        convention = get_convention(name)
        raise ConfigurationError(
            f"Weights {weights} were pretrained on input convention {convention.summary()}, but encoder "
            f"{encoder_entry.name!r} ({network.__name__}) can only be fed {', '.join(network.INPUT_NORMS)}. "
            f"Fine-tuning them behind another input would silently shift every activation. Fix: -w weights "
            f"pretrained for {encoder_entry.name!r} (python -m nnfm.registry lists them), or -e the encoder they were made for.")
    return get_convention(name)


def check_fed_convention(network, weights_name: Optional[str], source, encoder: str, configuration: str,
                         dataset: str = "DATASET") -> None:
    """Refuse to load weights pretrained on ``weights_name`` into a ``network`` fed another convention (its
    ``input_norm``, from the plans). ``weights_name`` None: the file records none (assumed the network's).
    ``dataset``: the id the fix's planning command names (a placeholder where the caller has no dataset)."""
    fed = getattr(network, "input_norm", None)
    if weights_name is None or fed is None or weights_name == fed:
        return
    raise ConfigurationError(
        f"Weights {source} were pretrained on input convention {get_convention(weights_name).summary()}, but these "
        f"plans feed the network {get_convention(fed).summary()}. Fix: plan for these weights, "
        f"nnFM_plan_and_preprocess -d {dataset} -e {encoder} -w {source} (the network then gets "
        f"'{weights_name}'), and train or extract with those plans (-p nnFMPlans_{encoder}, configuration "
        f"{configuration}).")


def nnunet_normalisation_conventions(normalization_schemes, use_mask_for_norm) -> set:
    """The conventions nnU-Net's own normalisation gives a network (its plans' ``normalization_schemes`` and
    ``use_mask_for_norm``): ``nnunet`` always; also ``zscore`` where every channel is z-scored per image over the
    whole image (nnunetv2 ZScoreNormalization without the nonzero mask), as nnFM's pretraining views are."""
    plain_zscore = set(normalization_schemes) == {"ZScoreNormalization"} and not any(use_mask_for_norm)
    return {NNUNET.name} | ({ZSCORE.name} if plain_zscore else set())


def check_nnunet_normalisation_fits(recorded: Optional[str], normalization_schemes, use_mask_for_norm,
                                    source) -> None:
    """ConfigurationError when weights pretrained on ``recorded`` would be fed nnU-Net's normalisation that is not
    that (e.g. z-score-pretrained weights on CT's global clip-and-scale); None records nothing and passes."""
    fits = nnunet_normalisation_conventions(normalization_schemes, use_mask_for_norm)
    if recorded is None or recorded in fits:
        return
    raise ConfigurationError(
        f"Weights {source} were pretrained on input convention {get_convention(recorded).summary()}; nnU-Net's "
        f"network here is fed nnU-Net's normalisation ({', '.join(sorted(set(normalization_schemes)))}), which fits "
        f"{' or '.join(sorted(fits))} only. Fix: weights pretrained on nnU-Net's intensities (-w FILE / "
        f"nnFM_WEIGHTS=FILE), nnU-Net's initialisation (-w random), or an nnFM encoder that applies '{recorded}' "
        f"itself (nnFM_plan_and_preprocess -d ID -e ENCODER; python -m nnfm.registry lists them).")

