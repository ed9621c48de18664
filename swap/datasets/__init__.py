"""Data set sources: built-in digits, torchvision's file-backed sets, ImageFolder, a user's own.

Run: python -c "from swap.data import DATASETS; print(sorted(DATASETS))"   (swap.data is the API)
"""
