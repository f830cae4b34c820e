"""Dagster definitions of the Hydra pipeline: assets, checks, jobs, schedules and sensors."""

import warnings

import dagster as dg

# Data versions on outputs, observable sources and partitioned asset checks are Dagster
# beta/preview features this pipeline relies on deliberately; their warnings, repeated in
# every process that loads the definitions, would bury the warnings that matter.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
