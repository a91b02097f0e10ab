"""A trained model's life: the runs registry, metrics and plots, evaluation, prediction, promotion."""
