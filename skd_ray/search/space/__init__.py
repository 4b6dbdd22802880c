"""The search space: a YAML file read and checked (`definition`), and the values counted in a
backbone's stages that a space may name symbolically (`stages`). Ray-free, so the command line
checks a space before Ray starts."""

from skd_ray.search.space.definition import SearchSpace, load_space

__all__ = ["SearchSpace", "load_space"]
