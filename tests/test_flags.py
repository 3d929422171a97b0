"""nnFM's flag dialect: nnU-Net's spelling for shared flags, hyphens for its own, either accepted."""
import argparse

from nnfm.flags import normalise_flags, parse_args


def _parser():
    parser = argparse.ArgumentParser()
    parser.add_argument("-device")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--no_pp", action="store_true")
    parser.add_argument("--lr", type=float)
    sub = parser.add_subparsers(dest="command")
    mae = sub.add_parser("mae")
    mae.add_argument("--mask-ratio", type=float)
    return parser


def test_either_spelling_of_a_long_flag_and_of_device_is_accepted():
    args = parse_args(_parser(), ["--device", "cpu", "--batch_size=3", "--no-pp", "--lr", "-0.001", "mae",
                                  "--mask_ratio", "0.5"])
    assert (args.device, args.batch_size, args.no_pp, args.lr, args.mask_ratio) == ("cpu", 3, True, -0.001, 0.5)


def test_values_and_unknown_flags_are_left_alone():
    assert normalise_flags(_parser(), ["--lr", "-2", "my_file-name", "--unknown_flag"]) == \
        ["--lr", "-2", "my_file-name", "--unknown_flag"]
