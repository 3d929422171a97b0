"""Registry of published pretrained weights (timm-style: one entry per checkpoint).

sha256 is the hash of the published file. Where it is not known from a source we could check,
it is None: the downloader then records the hash it saw and warns that the file is unverified,
instead of pretending to verify it.
"""
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from nnfm.conventions import HU_WINDOW, IMAGENET, NNUNET, WINDOW01, WINDOW255, ZSCORE


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
    # where only a prefix of the sha256 is published (torch.hub-style file names "-<8 hex>.pth"), that prefix:
    # it is checked, and the file is reported as verified by prefix only
    sha256_prefix: Optional[str] = None
    # shipped inside the package (nnfm/weights/embedded/<filename>): used offline, never downloaded; ``url`` is
    # then how it was made, and ``sha256`` is required
    embedded: bool = False
    # the file's state-dict layout: a JSON file of ../shared/checkpoint_layouts (keys, shapes, container; its
    # README.md says how each was made); the tests load and detect the family from it without a download
    layout: Optional[str] = None
    # what the encoder saw in pretraining (a name of nnfm/conventions.py CONVENTIONS); the planner feeds it that
    # (nnfm/weights/input_convention.py). None: unknown, the encoder's convention is assumed
    input_convention: Optional[str] = None
    # weights on the Hugging Face hub (``url`` https://huggingface.co/REPO/resolve/BRANCH/FILE): the commit (40 hex)
    # huggingface_hub fetches; None: the branch in ``url``, and the download warns with the commit to pin here
    revision: Optional[str] = None


_REGISTRY: Dict[str, WeightsEntry] = {}


def register_weights(entry: WeightsEntry) -> WeightsEntry:
    _REGISTRY[entry.name] = entry
    return entry


def unregister_weights(name: str) -> None:
    _REGISTRY.pop(name, None)


def get_weights_entry(name: str) -> Optional[WeightsEntry]:
    return _REGISTRY.get(name)


EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"


def embedded_path(entry: WeightsEntry) -> Path:
    """Where an embedded entry's file lies in the installed package."""
    return EMBEDDED_DIR / entry.filename


def embedded_weights() -> List[WeightsEntry]:
    return [e for e in _REGISTRY.values() if e.embedded]


def embedded_provenance(entry: WeightsEntry) -> dict:
    """The provenance JSON beside an embedded file (``python -m nnfm.weights.embed`` writes it): how it was made, and
    ``source_sha256``, the sha256 of the fp32 file it was exported from."""
    return json.loads((EMBEDDED_DIR / f"{entry.name}.json").read_text())


def register_embedded_weights(name: str, made_by: str, sha256: str, **fields) -> WeightsEntry:
    """Register weights shipped as ``embedded/<name>.safetensors`` (``python -m nnfm.weights.embed``), with the
    provenance JSON ``embedded/<name>.json`` beside them; ``made_by`` names the command that made them."""
    return register_weights(WeightsEntry(
        name=name, url=f"embedded ({made_by}; nnfm/weights/embedded/{name}.json)", sha256=sha256,
        filename=f"{name}.safetensors", embedded=True, **fields))


def available_weights(family: Optional[str] = None) -> List[str]:
    return sorted(n for n, e in _REGISTRY.items() if family is None or e.family == family)


_ANATOMIX_CITE = ("Dey et al., Learning general-purpose biomedical volume representations using "
                  "randomized synthesis, ICLR 2025")

register_weights(WeightsEntry(
    name="anatomix", input_convention=WINDOW01.name, family="anatomix_unet", layout="anatomix_unet.json",
    url="https://huggingface.co/neeldey/anatomix/resolve/main/anatomix.pth", sha256=None,
    filename="anatomix.pth",
    description="anatomix 3D U-Net (num_downs=4, ngf=16, 16-ch output) pretrained on synthetic volumes only. "
                "Hub location from anatomix/model/load_from_hf.py (repo neeldey/anatomix); sha256 not published, "
                "so the first download is recorded unverified.",
    license="MIT (anatomix repository)", citation=_ANATOMIX_CITE))

# nnFM's own (issue 12), shipped in the package, used offline (the anatomix default until the synthetic weights below).
# On 40 unseen Hippocampus cases at 400 fine-tuning iterations it was ahead of random init in 6 of 6 paired draws, at
# 3 labelled cases by +0.12 Dice, twice the spread across draws (documentation/benchmarks.md, "nnFM's own pretrained
# encoders vs random initialisation").
# The JSON beside the file has how it was made (command, steps, cases seen and held out)
register_embedded_weights(
    "anatomix_mae_hippocampus", "nnFM_pretrain mae",
    "89f39defe9197a18ad3092c047465830ef68646b8d14dc9f6eb151a07012b0ae", family="anatomix_unet",
    input_convention=ZSCORE.name,  # nnFM_pretrain mae z-scores every image (nnfm/pretraining/mae/cases.py)
    layout="anatomix_unet.json",  # anatomix's U-Net, pretrained by nnFM
    description="nnFM's dataset-adaptive anatomix U-Net: masked-image reconstruction as nnssl's MAE on the images "
                "of 160 MSD Hippocampus MRI cases (labels never read; the 40 cases nnFM_benchmark --test-cases 40 "
                "holds out with case seed 0 were never seen), 850 steps of batch 4 at 32x48x32 on a 2-core CPU, "
                "stored in fp16. For Hippocampus-like brain MRI; for other data pretrain on your own images with "
                "nnFM_pretrain mae -d ID.",
    license="CC-BY-SA 4.0 (trained on MSD Hippocampus, CC-BY-SA 4.0)",
    citation="nnFM; masked-image modelling as Wald et al., An OpenMind for 3D medical vision self-supervised "
             "learning (nnssl), 2025; data: Antonelli et al., The Medical Segmentation Decathlon, Nat. Commun. 2022")

# nnFM's own (issue 12): anatomix's synthetic-data recipe (nnFM_pretrain synth defaults), 500 steps on a 2-core CPU.
# No real image was read, so it carries no dataset's licence or bias. On 40 unseen Hippocampus cases it was ahead
# of random init in every draw (1 and 3 labelled cases; 100 and 400 fine-tuning iterations, at 100 by +0.33 to
# +0.38 mean Dice); the anatomix encoder's default (documentation/benchmarks.md, issue 12)
register_embedded_weights(
    "anatomix_synth_nnfm", "nnFM_pretrain synth",
    "d73dde9e3710f627757c15dbfb164f71c51e23fda671c818670ed1b59f44e2f1", family="anatomix_unet",
    input_convention=WINDOW01.name,  # synthetic volumes in [0, 1], as anatomix's
    layout="anatomix_unet.json",  # anatomix's U-Net, pretrained by nnFM
    description="nnFM's synthetic-data anatomix U-Net: voxel SupCon on random label ensembles with anatomix's "
                "pretraining recipe (6 conv taps, 3-layer batch-norm heads, uniform voxel sampling, AdamW 2e-4, "
                "weight decay 1e-5), 500 steps of batch 2 at 32^3 on a 2-core CPU (12 min), stored in fp16. "
                "No real data seen: usable for any modality; anatomix's published weights trained far longer.",
    license="Apache-2.0 (nnFM; synthetic training data only)",
    citation="nnFM; recipe of " + _ANATOMIX_CITE)

# nnFM's own (issue 27): anatomix's synthetic-data recipe on nnU-Net's own PlainConvUNet, 5000 steps on a 2-core CPU,
# no real image read. Fine-tuned inside nnU-Net's own dataset-specific plans (nnFMTrainer_nnUNetPlans: every tensor
# whose name and shape fit) it beat nnUNetTrainer on 40 unseen Hippocampus cases at 400 iterations with 1, 3 and 10
# labelled cases (+0.06 / +0.04 / +0.04 mean Dice; documentation/benchmarks.md, "The full grid (issue 27)"):
# nnFM's default (nnFM_plan_and_preprocess without -e, the demo)
register_embedded_weights(
    "plainconv_unet_synth_nnfm", "nnFM_pretrain synth --encoder plainconv_unet",
    "1fb7b4f9e80c756be3132d2b527d16e725864dae3c6c87503c7653fa24aa4451", family="nnunet_plainconv",
    input_convention=ZSCORE.name,  # nnFM_pretrain synth z-scores both views of a nnU-Net encoder (as nnU-Net feeds MRI)
    description="nnFM's synthetic-data PlainConvUNet (nnU-Net's network, 5 stages 32-320 features, instance norm): "
                "voxel SupCon on random label ensembles with anatomix's pretraining recipe, 5000 steps of one pair "
                "of 32^3 views on a 2-core CPU (about 80 min), stored in fp16. No real data seen. Loads by name and "
                "shape into any dataset's nnU-Net plans (nnFMTrainer_nnUNetPlans) or the fixed plainconv_unet.",
    license="Apache-2.0 (nnFM; synthetic training data only)",
    citation="nnFM; recipe of " + _ANATOMIX_CITE + "; network: Isensee et al., nnU-Net, Nat. Methods 2021")

register_weights(WeightsEntry(
    name="anatomix+brains", input_convention=WINDOW01.name, family="anatomix_unet",
    layout="anatomix_unet.json",  # anatomix.pth's architecture
    url="https://huggingface.co/neeldey/anatomix/resolve/main/anatomix+brains.pth", sha256=None,
    filename="anatomix+brains.pth",
    description="anatomix variant with brain label maps in its synthesis (same architecture); sha256 not published.",
    license="MIT (anatomix repository)", citation=_ANATOMIX_CITE))

register_weights(WeightsEntry(
    name="primus_m_openmind_mae", input_convention=ZSCORE.name, family="nnssl_primus", layout="nnssl_primus_m.json",
    url="https://huggingface.co/AnonRes/PrimusM-OpenMind-MAE/resolve/main/checkpoint_final.pth", sha256=None,
    filename="PrimusM-OpenMind-MAE_checkpoint_final.pth",
    description="nnssl Primus-M (Eva, embed 864, depth 16, 12 heads, 8^3 patches) MAE-pretrained on the OpenMind "
                "brain MRI collection (160^3 patches, 1 mm isotropic, z-scored). Hub repo AnonRes/PrimusM-OpenMind-MAE "
                "from the MIC-DKFZ OpenMind collection; sha256 not published by the authors, so the first download "
                "is recorded unverified.",
    license="see the model card of AnonRes/PrimusM-OpenMind-MAE (OpenMind models)",
    citation="Wald et al., An OpenMind for 3D medical vision self-supervised learning, arXiv:2412.17041"))

_DINOV3_CITE = "Simeoni et al., DINOv3, arXiv:2508.10104 (2025)"
_DINOV3_LICENSE = "DINOv3 License (Meta; https://ai.meta.com/resources/models-and-libraries/dinov3-license/)"
_DINOV3_NOTE = ("Official DINOv3 backbone (LVD-1689M), bare state dict with qkv bias + bias_mask, storage tokens and RoPE "
                "periods. Meta gates the download behind its licence form; if the URL refuses, fetch the file with the "
                "link Meta sends you and put it in the nnFM cache under this name. The name's '-{p}' suffix is the "
                "first 8 hex digits of its sha256 (torch.hub convention); only that prefix is checked, the full "
                "sha256 is not published.")

register_weights(WeightsEntry(
    name="dinov3_vits16", input_convention=IMAGENET.name, family="dinov3_vit", layout="dinov3_vits16.json",
    url="https://dl.fbaipublicfiles.com/dinov3/dinov3_vits16/dinov3_vits16_pretrain_lvd1689m-08c60483.pth",
    sha256=None, sha256_prefix="08c60483", filename="dinov3_vits16_pretrain_lvd1689m-08c60483.pth",
    description="DINOv3 ViT-S/16 (21.6M parameters). " + _DINOV3_NOTE.format(p="08c60483"),
    license=_DINOV3_LICENSE, citation=_DINOV3_CITE, in_channels=3))

register_weights(WeightsEntry(
    name="dinov3_vitb16", input_convention=IMAGENET.name, family="dinov3_vit", layout="dinov3_vitb16.json",
    url="https://dl.fbaipublicfiles.com/dinov3/dinov3_vitb16/dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth",
    sha256=None, sha256_prefix="73cec8be", filename="dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth",
    description="DINOv3 ViT-B/16 (85.7M parameters). " + _DINOV3_NOTE.format(p="73cec8be"),
    license=_DINOV3_LICENSE, citation=_DINOV3_CITE, in_channels=3))

register_weights(WeightsEntry(
    name="meddinov3_vitb16", input_convention=NNUNET.name, family="meddinov3_vit", layout="meddinov3_vitb16.json",
    url="https://huggingface.co/ricklisz123/MedDINOv3-ViTB-16-CT-3M/resolve/main/model.pth",
    sha256=None, filename="meddinov3_vitb16_ct3m_model.pth",
    description="MedDINOv3 ViT-B/16: DINOv3 ViT-B continued on CT-3M (3.87M CT slices), no qkv bias, "
                "{'teacher': backbone.* + DINO/iBOT heads}. Hugging Face ricklisz123/MedDINOv3-ViTB-16-CT-3M, "
                "file model.pth (cached as meddinov3_vitb16_ct3m_model.pth); sha256 not published, so the first "
                "download is recorded unverified.",
    license="see the model card (derived from DINOv3: DINOv3 License terms apply)",
    citation="Li et al., MedDINOv3: How to adapt vision foundation models for medical image segmentation?, "
             "arXiv:2509.02379 (2025)", in_channels=3))

register_weights(WeightsEntry(
    name="anatomix-dev", input_convention=WINDOW01.name, family="anatomix_dev_unet", layout="anatomix_dev_unet.json",
    url="https://huggingface.co/neeldey/anatomix/resolve/main/anatomix-dev.pth", sha256=None,
    filename="anatomix-dev.pth",
    description="anatomix-dev: the authors' experimental larger 3D U-Net (94.4M parameters; num_downs=5, ngf=32, "
                "instance norm eps 1e-2 without affine parameters, average pooling, trilinear upsampling, 32-ch "
                "output), trained on more data with newer pretraining losses (anatomix README). Hub file "
                "'<variant>.pth' of repo neeldey/anatomix, kwargs of ANATOMIX_VARIANTS['anatomix-dev'] "
                "(anatomix/model/load_from_hf.py); sha256 not published, so the first download is recorded "
                "unverified. Earlier releases under the same name had other sizes (num_downs=5, ngf=20).",
    license="MIT (anatomix repository)", citation=_ANATOMIX_CITE))

register_weights(WeightsEntry(
    name="anatomix-dev-vit", input_convention=WINDOW01.name, family="primus_v2", layout="anatomix_dev_vit.json",
    url="https://huggingface.co/neeldey/anatomix/resolve/main/anatomix-dev-vit.pth", sha256=None,
    filename="anatomix-dev-vit.pth",
    description="anatomix-dev-vit: a PrimusV2-S 3D ViT (embed 396, depth 12, 6 heads, 8^3 tokens, 8 register tokens, "
                "QK-norm) contrastively pretrained on anatomix's synthetic volumes at 128^3, a bare state dict of the "
                "whole module (tokenizer, eva, 32-channel up-projection). Hub location: anatomix/model/load_from_hf.py "
                "(repo neeldey/anatomix, '<variant>.pth'), variant 'anatomix-dev-vit' as anatomix's registration "
                "features.py loads it; sha256 not published, so the first download is recorded unverified.",
    license="MIT (anatomix repository)", citation=_ANATOMIX_CITE))

# ---- issue 15: nnssl / OpenMind ResEnc-L, LVM-Med ResNet-50 --------------------------------------------------
register_weights(WeightsEntry(
    name="resenc_l_openmind_mae", input_convention=ZSCORE.name, family="nnssl_resenc", layout="nnssl_resenc_l.json",
    url="https://huggingface.co/MIC-DKFZ/ResEncL-OpenMind-MAE/resolve/main/checkpoint_final.pth", sha256=None,
    filename="ResEncL-OpenMind-MAE_checkpoint_final.pth",
    description="nnssl ResEnc-L (nnU-Net's ResidualEncoderUNet: 6 stages, 32..320 features, blocks 1-3-4-6-6-6) "
                "MAE-pretrained on the OpenMind brain MRI collection (160^3 patches, 1 mm isotropic, z-scored). "
                "nnssl release layout: {'network_weights', 'nnssl_adaptation_plan', 'init_args', 'trainer_name'}, "
                "the file nnU-Net master's nnUNetv2_preprocess_like_nnssl / nnUNetv2_train_pretrained take. Hub repo "
                "MIC-DKFZ/ResEncL-OpenMind-MAE (first published as AnonRes/ResEncL-OpenMind-MAE, which redirects), "
                "file checkpoint_final.pth as nnU-Net master's like_nnssl.py downloads it; sha256 not published by "
                "the authors, so the first download is recorded unverified.",
    license="CC-BY-4.0 (model card of MIC-DKFZ/ResEncL-OpenMind-MAE)",
    citation="Wald et al., An OpenMind for 3D medical vision self-supervised learning, arXiv:2412.17041"))

LVMMED_LICENSE = ("CC BY-NC-ND 2.0 (Attribution-NonCommercial-NoDerivs 2.0 Generic; LVM-Med README 'License': "
                  "academic research use only, commercial use needs the authors' permission)")

register_weights(WeightsEntry(
    name="lvmmed_resnet50", input_convention=WINDOW255.name, family="lvmmed_resnet50", layout="lvmmed_resnet50.json",
    url="https://drive.google.com/uc?export=download&id=11Uamq4bT_AbTf8sigIctIAnQJN4EethW", sha256=None,
    filename="lvmmed_resnet.torch",
    description="LVM-Med ResNet-50 (torchvision layout without fc), self-supervised by second-order graph matching on "
                "~1.3M medical images from 55 datasets. Link from the LVM-Med README ('LVM-Med Pretrained Models', "
                "ResNet-50 'backbone', Google Drive file 11Uamq4bT_AbTf8sigIctIAnQJN4EethW). Google Drive may answer "
                "with a confirmation page instead of the file: then download it in a browser and put it in the nnFM "
                "cache as lvmmed_resnet.torch. sha256 not published, so the first download is recorded unverified.",
    license=LVMMED_LICENSE,
    citation="Nguyen et al., LVM-Med: Learning Large-Scale Self-Supervised Vision Models for Medical Imaging via "
             "Second-order Graph Matching, NeurIPS 2023 (arXiv:2306.11925)", in_channels=3))

register_weights(WeightsEntry(
    name="drasclr_copdgene", input_convention=HU_WINDOW.name, family="drasclr", layout="drasclr_encoder.json",
    url="https://drive.usercontent.google.com/download?id=1C3jUUfPZDmeufy3kcH_ShdTSknFs0bih&export=download&confirm=t",
    sha256=None, filename="drasclr_copdgene_checkpoint.pth.tar",
    description="DrasCLR encoder MoCo-pretrained on COPDGene inspiratory lung CT (1 mm isotropic 32^3 patches at 581 "
                "atlas locations, 8 experts, rep_dim 128). The authors publish it as a Google Drive file (README of "
                "batmanlab/DrasCLR, 'Pretrained weights': https://drive.google.com/file/d/"
                "1C3jUUfPZDmeufy3kcH_ShdTSknFs0bih/view); the URL here is that file's direct-download form. If Google "
                "answers with a web page instead (quota, sign-in), download it in a browser and put it in the nnFM "
                "cache under this file name, or pass its path with -w / nnFM_WEIGHTS. The file is the whole DDP "
                "checkpoint (query and momentum encoders, MoCo queue, optimizer); only encoder_q is used. sha256 not "
                "published.",
    license="none stated (no licence file in batmanlab/DrasCLR; trained on COPDGene, whose data-use terms apply)",
    citation="Yu et al., DrasCLR: A self-supervised framework of learning disease-related and anatomy-specific "
             "representation for 3D lung CT images, Medical Image Analysis 92:103062 (2024)"))
