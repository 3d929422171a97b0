"""How far a pretrained encoder's dense output moves when it is fed another input convention than it was pretrained
on (issue 26), in eval mode with its stored statistics, as nnFM_extract_features and a frozen encoder run it.

    python benchmarks/input_convention_shift.py [-w anatomix_mae_hippocampus] [--image ../shared/.../hippocampus_036.nii.gz]

Feeds one real image, z-scored as nnU-Net's ZScoreNormalization does, to the anatomix U-Net with the weights, once as
the weights' own convention and once through each other convention the network can apply (the [0, 1] window at the
image's 0.5 / 99.5 percentiles), and prints the relative L2 difference of the dense features.
"""
import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from nnfm.networks.segmentation_unet import AnatomixSegmentationNetwork
from nnfm.weights import load_pretrained
from nnfm.weights.input_convention import weights_convention

IMAGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "Task04_Hippocampus" / "imagesTr" / \
    "hippocampus_036.nii.gz"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-w", "--weights", default="anatomix_mae_hippocampus")
    parser.add_argument("--image", type=Path, default=IMAGE)
    args = parser.parse_args(argv)
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(args.image))).astype(np.float32)
    z = (image - image.mean()) / image.std()  # nnU-Net's ZScoreNormalization without a mask
    lo, hi = (float(v) for v in np.percentile(z, (0.5, 99.5)))
    x = torch.from_numpy(z)[None, None]
    x = torch.nn.functional.pad(x, [0, -x.shape[4] % 16, 0, -x.shape[3] % 16, 0, -x.shape[2] % 16])
    own = weights_convention(args.weights)
    outputs = {}
    for norm in AnatomixSegmentationNetwork.INPUT_NORMS:
        network = AnatomixSegmentationNetwork(1, 3, input_norm=norm, input_window=[[lo, hi]]).eval()
        load_pretrained(network.encoder, args.weights)
        with torch.no_grad():
            outputs[norm] = network.dense_features(x)
    print(f"weights {args.weights} (pretrained on '{own}'), image {args.image.name}, eval mode")
    for norm, out in outputs.items():
        if norm != own:
            shift = float((out - outputs[own]).norm() / outputs[own].norm())
            print(f"  fed '{norm}' instead of '{own}': relative difference of the dense features {shift:.3f}")


if __name__ == "__main__":
    main()
