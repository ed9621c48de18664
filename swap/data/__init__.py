"""Data: the sets by name (`registry`), their sources (`digits`, `files`, `folder`, `custom`,
sharing `common`), and the loaders every phase feeds from (`loaders`).

Run: python -m swap.catalog   (the built-in sets)
"""
