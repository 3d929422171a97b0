"""One declared input convention per checkpoint family: what the encoder saw when its weights were made.

nnU-Net normalises every image first (ZScoreNormalization for MRI, CTNormalization for CT; a plugin cannot
add schemes). Each nnFM network then applies its family's convention inside ``forward`` (or the planner picks
nnU-Net's matching scheme), so training, validation and ``nnUNetv2_predict`` see the same input. Plans store
the convention as plain JSON in ``arch_kwargs``; plans written before issue 11 keep their old behaviour.

| family | convention | where it is applied | source |
|---|---|---|---|
| MedDINOv3 (``meddinov3_vitb16``) | ``nnunet``: nnU-Net's normalised intensities as they are, grey repeated to RGB | ``DINOv3SegmentationNetwork(input_norm="nnunet")``; RGB repeat = summed stem kernels | ricklisz/MedDINOv3 nnUNet/nnunetv2/training/nnUNetTrainer/dinov3/dinov3/models/primus.py (``Primus_Multiscale.forward``: ``x.repeat(1, 3, 1, 1)`` only) and README (``meddinov3_base_primus_multiscale_Trainer`` on nnUNetPlans) |
| official DINOv3 (``dinov3_vit*16``) | ``imagenet``: planned window -> [0, 1] -> ImageNet mean / std | ``DINOv3SegmentationNetwork(input_norm="imagenet")`` | facebookresearch/dinov3 dinov3/data/transforms.py (``make_normalize_transform``: IMAGENET_DEFAULT_MEAN / _STD) |
| anatomix | ``window01``: planned 0.5 / 99.5 percentile window -> [0, 1], background 0 | ``IntensityWindow(zero_is_background=use_mask_for_norm)`` | neel-dey/anatomix anatomix/segmentation/segmentation_utils.py (``get_train_transforms`` / ``get_val_transforms``: MONAI ``ScaleIntensityd``, each volume min-max scaled to [0, 1]; a skull-stripped volume's minimum is its background) |
| nnssl / OpenMind Primus | ``zscore``: every channel z-scored per image | the Primus planner plans nnU-Net's ``ZScoreNormalization`` for every channel (also CT) | MIC-DKFZ/nnssl src/nnssl/preprocessing/preprocessors/default_preprocessor.py (``normalize`` per channel, whole image, before resampling) |
| DrasCLR | ``hu_window``: CT clipped to [-1024, 240] HU -> [-1, 1], 1 mm isotropic | the DrasCLR planner writes the HU window in CTNormalization units into ``input_window``; ``DrasCLRSegmentationNetwork`` clips and scales to [-1, 1] | batmanlab/DrasCLR data/copd_patch.py (``np.clip(x, -1024, 240)``, ``/ 632 - 1``), preprocess/4_patchify_images.py (1 mm) |
"""
# family -> convention name written into the plans (arch_kwargs "input_norm" for the ViT path)
INPUT_CONVENTIONS = {
    "meddinov3": "nnunet",
    "dinov3": "imagenet",
    "anatomix": "window01",
    "nnssl": "zscore",
}
