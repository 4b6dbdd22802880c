"""skd-ray: teacher-free self-knowledge distillation with hyperparameter search at cluster scale."""

__version__ = "0.1.0"
