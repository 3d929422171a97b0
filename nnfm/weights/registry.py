"""Registry of published pretrained weights (timm-style: one entry per checkpoint).

sha256 is the hash of the published file. Where it is not known from a source we could check,
it is None: the downloader then records the hash it saw and warns that the file is unverified,
instead of pretending to verify it.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional


@dataclass(frozen=True)
class WeightsEntry:
    name: str
    family: str
    url: str
    sha256: Optional[str]
    filename: str
    description: str
    license: str
    citation: str
    in_channels: int = 1


_REGISTRY: Dict[str, WeightsEntry] = {}


def register_weights(entry: WeightsEntry) -> WeightsEntry:
    _REGISTRY[entry.name] = entry
    return entry


def unregister_weights(name: str) -> None:
    _REGISTRY.pop(name, None)


def get_weights_entry(name: str) -> Optional[WeightsEntry]:
    return _REGISTRY.get(name)


def available_weights(family: Optional[str] = None) -> List[str]:
    return sorted(n for n, e in _REGISTRY.items() if family is None or e.family == family)


_ANATOMIX_CITE = ("Dey et al., Learning general-purpose biomedical volume representations using "
                  "randomized synthesis, ICLR 2025")

register_weights(WeightsEntry(
    name="anatomix", family="anatomix_unet",
    url="https://huggingface.co/neeldey/anatomix/resolve/main/anatomix.pth", sha256=None,
    filename="anatomix.pth",
    description="anatomix 3D U-Net (num_downs=4, ngf=16, 16-ch output) pretrained on synthetic volumes only. "
                "Hub location from anatomix/model/load_from_hf.py (repo neeldey/anatomix); sha256 not published, "
                "so the first download is recorded unverified.",
    license="MIT (anatomix repository)", citation=_ANATOMIX_CITE))

register_weights(WeightsEntry(
    name="anatomix+brains", family="anatomix_unet",
    url="https://huggingface.co/neeldey/anatomix/resolve/main/anatomix+brains.pth", sha256=None,
    filename="anatomix+brains.pth",
    description="anatomix variant with brain label maps in its synthesis (same architecture); sha256 not published.",
    license="MIT (anatomix repository)", citation=_ANATOMIX_CITE))

register_weights(WeightsEntry(
    name="primus_m_openmind_mae", family="nnssl_primus",
    url="https://huggingface.co/AnonRes/PrimusM-OpenMind-MAE/resolve/main/checkpoint_final.pth", sha256=None,
    filename="PrimusM-OpenMind-MAE_checkpoint_final.pth",
    description="nnssl Primus-M (Eva, embed 864, depth 16, 12 heads, 8^3 patches) MAE-pretrained on the OpenMind "
                "brain MRI collection (160^3 patches, 1 mm isotropic, z-scored). Hub repo AnonRes/PrimusM-OpenMind-MAE "
                "from the MIC-DKFZ OpenMind collection; sha256 not published by the authors, so the first download "
                "is recorded unverified.",
    license="see the model card of AnonRes/PrimusM-OpenMind-MAE (OpenMind models)",
    citation="Wald et al., An OpenMind for 3D medical vision self-supervised learning, arXiv:2412.17041"))
