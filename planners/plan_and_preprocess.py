"""``nnFM_plan_and_preprocess``: fingerprint, plans and preprocessing in one command.

Without ``-e`` (nnFM's default): nnU-Net's own planning (``ExperimentPlanner``, plans ``nnUNetPlans``, the same
plans ``nnUNetv2_plan_and_preprocess`` writes) and 3d_fullres preprocessing; the pretrained weights its network
starts from (``-w``; default nnFM's embedded ``plainconv_unet_synth_nnfm``) are checked against nnU-Net's
normalisation and recorded in the 3d_fullres configuration's ``nnfm`` section, and
``nnUNetv2_train ID 3d_fullres FOLD -tr nnFMTrainer_nnUNetPlans`` trains from them.
With ``-e ENCODER``: a registered encoder's fixed topology, planned by its nnFM planner into ``nnFMPlans_<encoder>``.
nnUNetv2_plan_experiment -pl only finds planners inside nnunetv2, so nnFM ships this entry point.
"""
import argparse
import contextlib
import os

from nnfm.errors import ConfigurationError
from nnfm.flags import parse_args
from nnfm.paths import require_nnunet_paths
from nnfm.registry import encoder_names, get_encoder
from nnfm.weights.families import NNUNET_NETWORK_ENCODERS
from nnfm.weights.input_convention import planned_convention


def plan_command(dataset_id, encoder: str, weights: str = None, *options) -> str:
    """The ``nnFM_plan_and_preprocess`` line for this dataset, encoder and weights (the advice of planning errors)."""
    import shlex

    parts = ["nnFM_plan_and_preprocess", "-d", str(dataset_id)] + (["-e", encoder] if encoder else [])
    if weights is not None:
        parts += ["-w", str(weights)]
    return " ".join(shlex.quote(p) for p in parts + [str(o) for o in options])


# nnFM's default (no -e): nnU-Net's own plans, its network started from the weights nnFM pretrained for it
NNUNET_PLANS = "nnUNetPlans"
NNUNET_PLANS_TRAINER = "nnFMTrainer_nnUNetPlans"
# nnU-Net's ExperimentPlanner plans a PlainConvUNet: the registered encoder of that class gives the checkpoint
# families and default weights nnU-Net's own plans are started from
NNUNET_NETWORK_ENCODER = NNUNET_NETWORK_ENCODERS["PlainConvUNet"]


@contextlib.contextmanager
def stops_with_its_message():
    """nnFM's errors end the command with their message (they name the problem and the fix), not a traceback."""
    from nnfm.errors import NNFMError
    try:
        yield
    except NNFMError as error:
        raise SystemExit(f"nnFM_plan_and_preprocess: {error}") from None


def plan_and_preprocess(dataset_id: int, encoder: str = None, weights: str = None,
                        gpu_memory_target_gb: float = 8, num_processes: int = 2, preprocess: bool = True,
                        verify_dataset_integrity: bool = False, hires: int = None, vit_kwargs: str = None,
                        overwrite_target_spacing=None, check_dataset: bool = True, clean: bool = False) -> str:
    """Check, fingerprint, plan and preprocess one dataset; returns the plans name. Without ``encoder``: nnU-Net's
    own plans (:func:`plan_nnunet_own`); with one: its nnFM planner (:func:`plan_encoder`). Every check that can
    refuse the input runs before nnU-Net writes plans or preprocessed data."""
    require_nnunet_paths()
    with stops_with_its_message():
        entry = get_encoder(encoder or NNUNET_NETWORK_ENCODER)
        weights = checked_weights(weights, entry)
        extra = planner_options(entry, encoder, hires, vit_kwargs, overwrite_target_spacing)
        if encoder is not None:  # what the planner will refuse, before the dataset work (nnU-Net's plans: later)
            planned_convention(entry, weights or entry.weights or "random")
    preprocessed = prepare_dataset(dataset_id, entry, encoder, weights, num_processes, verify_dataset_integrity,
                                   check_dataset, clean)
    if encoder is None:
        return plan_nnunet_own(dataset_id, preprocessed, weights or entry.weights, gpu_memory_target_gb,
                               num_processes, preprocess, extra.get("overwrite_target_spacing"))
    return plan_encoder(dataset_id, entry, weights, preprocessed, gpu_memory_target_gb, num_processes, preprocess,
                        extra)


def checked_weights(weights, entry):
    """``-w`` as the plans will store it (a downloaded snapshot folder: its only checkpoint), checked against the
    encoder's checkpoint families: a wrong -w stops here, not after preprocessing, at nnUNetv2_train."""
    from nnfm.weights import check_weights_source
    from nnfm.weights.loading import resolve_weights_folder
    weights, note = resolve_weights_folder(weights)
    if note:
        print(f"nnFM: {note}")
    check_weights_source(weights or entry.weights, entry.families)
    return weights


def planner_options(entry, encoder, hires, vit_kwargs, overwrite_target_spacing) -> dict:
    """The planner's keyword arguments beyond nnU-Net's; options that do not apply to the encoder are refused."""
    import pydoc

    extra = {}
    if entry.configuration == "2d" and issubclass(pydoc.locate(entry.planner), vit_planner()):
        from nnfm_planners.nnfm_vit_planner import check_hires, vit_kwargs_from_env_or_arg
        check_hires(hires)
        extra = {"hires": hires, "vit_kwargs": vit_kwargs_from_env_or_arg(vit_kwargs)}
    elif hires is not None or vit_kwargs is not None:
        raise SystemExit(f"--hires / --vit_kwargs apply to the ViT encoders, not {encoder or 'nnU-Net plans'!r}.")
    if overwrite_target_spacing is not None:  # nnU-Net's flag (e.g. 1 1 1: plan an nnssl encoder like its pretraining)
        extra["overwrite_target_spacing"] = [float(s) for s in overwrite_target_spacing]
    return extra


def vit_planner() -> type:
    from nnfm_planners.nnfm_vit_planner import nnFMViTPlanner
    return nnFMViTPlanner


def prepare_dataset(dataset_id: int, entry, encoder, weights, num_processes: int, verify_dataset_integrity: bool,
                    check_dataset: bool, clean: bool) -> str:
    """nnFM's check of every image and label map, nnU-Net's fingerprint (reused unless ``clean``), the fingerprint's
    check and, for a 3D encoder, the refusal of 2D datasets; returns the dataset's nnUNet_preprocessed folder."""
    from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import CTNormalization
    from nnunetv2.preprocessing.normalization.map_channel_name_to_normalization import get_normalization_scheme
    from nnunetv2.utilities.dataset_name_id_conversion import convert_id_to_dataset_name

    from nnfm.planning.statistics_checks import check_fingerprint
    try:
        dataset_name = convert_id_to_dataset_name(dataset_id)
    except RuntimeError as error:  # nnU-Net's own message names the folders it searched
        raise SystemExit(f"nnFM_plan_and_preprocess -d {dataset_id}: {error}\nFix: convert the dataset into "
                         f"nnUNet_raw first (e.g. nnUNetv2_convert_MSD_dataset -i TaskXX_Name), or pass its id.") from None
    preprocessed = join(nnUNet_preprocessed, dataset_name)
    if check_dataset:  # every image and label map, before nnU-Net's fingerprint (nnfm/planning/dataset_checks.py)
        from nnfm.planning.dataset_checks import CHECK_FILE
        from nnfm.planning.dataset_checks import check_dataset as run_dataset_check
        with stops_with_its_message():
            checked = run_dataset_check(join(nnUNet_raw, dataset_name), num_processes,
                                        cache_file=join(preprocessed, CHECK_FILE))
        print(checked.summary())
        for warning in checked.warnings:
            print(f"WARNING (nnFM): {warning}")
    fingerprint_file = join(preprocessed, "dataset_fingerprint.json")
    if clean or not isfile(fingerprint_file):
        extract_fingerprint_dataset(dataset_id, num_processes=num_processes,
                                    check_dataset_integrity=verify_dataset_integrity, clean=True, verbose=False)
    elif verify_dataset_integrity:  # nnU-Net's own check on request, as nnUNetv2_plan_and_preprocess runs it
        from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity as nnunet_verify
        nnunet_verify(join(nnUNet_raw, dataset_name), num_processes)
    dataset_json = load_json(join(nnUNet_raw, dataset_name, "dataset.json"))
    fingerprint = load_json(fingerprint_file)
    channel_names = dataset_json.get("channel_names", dataset_json.get("modality", {}))
    with stops_with_its_message():
        check_fingerprint(fingerprint, fingerprint_file, len(channel_names),
                          plan_command(dataset_id, encoder, weights, "--clean"),
                          [get_normalization_scheme(n) is CTNormalization for n in channel_names.values()])
    if entry.configuration == "3d_fullres":  # before any planning or preprocessing work
        from nnfm_planners.dimensionality import refuse_2d_dataset_for_3d_encoder
        try:
            refuse_2d_dataset_for_3d_encoder(fingerprint, dataset_json, entry.name)
        except ConfigurationError as error:
            if encoder is None:  # nnFM's default: the user named no encoder, so the message names none
                raise SystemExit(
                    f"nnFM_plan_and_preprocess: dataset {dataset_id} is 2D (every training image is one slice "
                    f"thick); nnFM's default starts nnU-Net's 3D network from 3D weights, and nnU-Net plans no 3D "
                    f"configuration for 2D data. Fix: nnUNetv2_plan_and_preprocess -d {dataset_id} and train "
                    f"nnUNetTrainer (2d), or a 2D encoder: nnFM_plan_and_preprocess -d {dataset_id} -e "
                    f"dinov3_vitb16 (python -m nnfm.registry lists the 2d ones).") from None
            raise SystemExit(f"nnFM_plan_and_preprocess: {error}") from None
    return preprocessed


def plan_encoder(dataset_id: int, entry, weights, preprocessed: str, gpu_memory_target_gb: float,
                 num_processes: int, preprocess: bool, extra: dict) -> str:
    """The encoder's nnFM planner writes ``nnFMPlans_<encoder>`` (patch and batch for its fixed topology); plans
    that fail nnFM's checks are removed. Returns the plans name."""
    import pydoc
    from batchgenerators.utilities.file_and_folder_operations import isfile, join
    from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess_dataset

    from nnfm.errors import NNFMError
    from nnfm.planning.patch_padding import padding_warning
    from nnfm.planning.statistics_checks import check_plans
    plans_name, configuration = entry.plans_name, entry.configuration
    planner = pydoc.locate(entry.planner)(dataset_id, gpu_memory_target_gb, plans_name=plans_name,
                                          encoder=entry.name, weights=weights, **extra)
    plans = planner.plan_experiment()
    plans_file = join(preprocessed, plans_name + ".json")
    with stops_with_its_message():
        try:
            check_plans(plans, configuration, plans_file)
        except NNFMError:
            if isfile(plans_file):
                os.remove(plans_file)  # never trained on: nnUNetv2_train finds no plans instead of NaN ones
            raise
    config = plans["configurations"][configuration]
    print(f"nnFM plans '{plans_name}' ({configuration}): patch {config['patch_size']}, batch {config['batch_size']}, "
          f"spacing {config['spacing']}, estimated training memory "
          f"{config['nnfm']['estimated_training_memory_gb']} GB (target {gpu_memory_target_gb} GB), "
          f"intensity window {config['architecture']['arch_kwargs'].get('input_window', 'none (z-scored input)')}")
    print(describe_weights(config["nnfm"]["weights"]))
    gpu = [] if gpu_memory_target_gb == 8 else ["-gpu_memory_target", f"{gpu_memory_target_gb:g}"]
    warning = padding_warning(plans, configuration, dataset_id, plan_command(dataset_id, entry.name, weights, *gpu))
    if warning:
        print(warning)
    if preprocess:
        preprocess_dataset(dataset_id, plans_name, (configuration,), (num_processes,), verbose=False)
    return plans_name


def plan_nnunet_own(dataset_id: int, preprocessed: str, weights: str, gpu_memory_target_gb: float,
                    num_processes: int, preprocess: bool, overwrite_target_spacing=None) -> str:
    """nnU-Net's ExperimentPlanner writes ``nnUNetPlans``; the weights for its 3d_fullres network are checked against
    the planned normalisation (before preprocessing) and recorded there. Returns the plans name."""
    from batchgenerators.utilities.file_and_folder_operations import join, load_json, save_json
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess_dataset

    from nnfm.planning.statistics_checks import check_plans
    from nnfm.weights.input_convention import check_nnunet_normalisation_fits, weights_convention
    from nnfm.weights.random_init import is_random_init

    planner = ExperimentPlanner(dataset_id, gpu_memory_target_gb, plans_name=NNUNET_PLANS,
                                overwrite_target_spacing=overwrite_target_spacing)
    convention = None if is_random_init(weights) else weights_convention(weights)
    with stops_with_its_message():  # before nnU-Net's planner writes (and so replaces) nnUNetPlans.json
        check_nnunet_normalisation_fits(convention,
                                        *planner.determine_normalization_scheme_and_whether_mask_is_used_for_norm(),
                                        weights)
    planner.plan_experiment()
    plans_file = join(preprocessed, NNUNET_PLANS + ".json")
    plans = load_json(plans_file)
    configuration = "3d_fullres"
    config = plans["configurations"][configuration]  # a 2D dataset was refused before planning
    with stops_with_its_message():
        check_plans(plans, configuration, plans_file)
    # read by nnFMTrainer_nnUNetPlans (nnFM_WEIGHTS overrides); nnU-Net itself ignores the section. Every 3D
    # configuration gets it (3d_lowres too; 3d_cascade_fullres inherits 3d_fullres'), so -w holds for all of them;
    # 2d has none (3D weights are refused there)
    section = {"encoder": None, "weights": "random" if is_random_init(weights) else weights,
               "input_convention": convention,
               "planned_by": "nnU-Net's ExperimentPlanner (nnFM_plan_and_preprocess without -e)"}
    for planned in plans["configurations"].values():
        if "Conv3d" in str((planned.get("architecture") or {}).get("arch_kwargs", {}).get("conv_op", "")):
            planned["nnfm"] = dict(section)
    save_json(plans, plans_file, sort_keys=False)
    print(f"nnU-Net's plans '{NNUNET_PLANS}' ({configuration}): {config['architecture']['network_class_name']}, "
          f"{len(config['architecture']['arch_kwargs']['features_per_stage'])} stages, patch {config['patch_size']}, "
          f"batch {config['batch_size']}, spacing {config['spacing']}, normalisation "
          f"{', '.join(config['normalization_schemes'])}")
    print(describe_weights(weights, "weights of nnU-Net's network") if not is_random_init(weights) else
          "weights of nnU-Net's network: random (nnU-Net's initialisation)")
    if preprocess:
        preprocess_dataset(dataset_id, NNUNET_PLANS, (configuration,), (num_processes,), verbose=False)
    return NNUNET_PLANS


def describe_weights(weights: str, what: str = "encoder weights") -> str:
    """One line on the weights the plans store: what a registry name is and where the trainer will find it."""
    from nnfm.weights.download import cache_dir, cached_file, hub_file
    from nnfm.weights.registry import get_weights_entry
    entry = get_weights_entry(str(weights))
    if entry is None:
        return f"{what}: {weights}"
    cached, hub = (None, None) if entry.embedded else (cached_file(entry), hub_file(entry))
    if entry.embedded:
        where = "embedded in the package, offline"
    elif cached is not None:
        where = f"cached at {cached}"
    elif hub is not None:  # resolve_checkpoint downloads it when the trainer first loads it
        where = (f"not cached yet: nnUNetv2_train fetches it with huggingface_hub from {hub.repo_id} (revision "
                 f"{hub.revision}) into the hub's cache (HF_HOME; HF_TOKEN for gated repositories); offline, run "
                 f"`{hub.command()}` where there is a connection, or put the file at {cache_dir() / entry.filename}")
    else:
        where = (f"not cached yet: nnUNetv2_train downloads it from {entry.url} to {cache_dir() / entry.filename}; "
                 f"offline, put the file there")
    return f"{what}: {weights} ({where}; licence {entry.license}): {entry.description}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--dataset", type=int, nargs="+", required=True, help="dataset id(s)")
    parser.add_argument("-e", "--encoder", default=None, choices=encoder_names(),
                        help="encoder from nnFM's registry, planned at its fixed topology into nnFMPlans_ENCODER "
                             "(python -m nnfm.registry lists them). Default: none, nnU-Net's own plans (nnUNetPlans) "
                             "with nnU-Net's network started from nnFM's pretrained weights")
    parser.add_argument("-w", "--weights", default=None,
                        help="registry name or path of the pretrained checkpoint stored in the plans; "
                             "'random' for none. Default: the encoder's registry default (python -m nnfm.registry); "
                             "without -e nnFM's embedded synthetic-data PlainConvUNet plainconv_unet_synth_nnfm, "
                             "offline. "
                             "Checked before any planning work.")
    parser.add_argument("-gpu_memory_target", type=float, default=8, help="GPU memory target in GB (as nnU-Net)")
    parser.add_argument("-np", type=int, default=max(1, min(4, os.cpu_count() or 1)), help="processes")
    parser.add_argument("--no_pp", action="store_true", help="plan only, do not preprocess")
    parser.add_argument("--verify_dataset_integrity", action="store_true",
                        help="also run nnU-Net's own verify_dataset_integrity (nnFM's dataset check runs anyway)")
    parser.add_argument("--no-dataset-check", action="store_true",
                        help="skip nnFM's check of every image and label map before the fingerprint (NaN / Inf "
                             "voxels, undeclared or background-only labels, channel geometry, constant channels); "
                             "a passed check is remembered while the files are unchanged")
    parser.add_argument("--clean", action="store_true",
                        help="extract nnU-Net's dataset fingerprint again even if one exists (as nnU-Net's flag)")
    parser.add_argument("--hires", type=int, default=None, metavar="SIZE",
                        help="ViT encoders: resample slices in-plane so the median slice's longer side is SIZE "
                             "pixels (MedDINOv3's high-resolution setting, e.g. 896)")
    parser.add_argument("--vit_kwargs", default=None, metavar="JSON",
                        help="ViT encoders: extra timm kwargs stored in the plans, e.g. a tiny test model "
                             "'{\"embed_dim\": 32, \"depth\": 4, \"num_heads\": 2}' (use with -w random)")
    parser.add_argument("-overwrite_target_spacing", type=float, nargs="+", default=None, metavar="MM",
                        help="nnU-Net's flag: plan at this spacing (3d_fullres, nnU-Net axis order) instead of "
                             "nnU-Net's choice, e.g. 1 1 1 to plan resenc_l / primus_m like their 1 mm pretraining")
    args = parse_args(parser, argv)
    for dataset_id in args.dataset:
        with stops_with_its_message():  # every nnFM refusal, wherever raised (planners included), as one line
            plans_name = plan_and_preprocess(dataset_id, args.encoder, args.weights, args.gpu_memory_target, args.np,
                                             not args.no_pp, args.verify_dataset_integrity, args.hires,
                                             args.vit_kwargs, args.overwrite_target_spacing,
                                             not args.no_dataset_check, args.clean)
        if args.encoder is None:
            print(f"Train with: nnUNetv2_train {dataset_id} 3d_fullres FOLD -tr {NNUNET_PLANS_TRAINER}")
            continue
        entry = get_encoder(args.encoder)
        print(f"Train with: nnUNetv2_train {dataset_id} {entry.configuration} FOLD -tr {entry.trainer} -p {plans_name}")


if __name__ == "__main__":
    main()
