"""Models: architectures by name (`registry`) and the CIFAR-style nets swap writes itself
(`cifar`), built for a data set's channels and classes.

Run: python -m swap.catalog   (the names)
"""
