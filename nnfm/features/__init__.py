"""Dense feature export (``nnFM_extract_features``): nnfm/features/extract.py."""
