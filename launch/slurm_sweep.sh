#!/usr/bin/env bash
# Run a synque sweep on a SLURM cluster through Hydra's submitit launcher: one SLURM job per
# Hydra job, all logging to one tracking server (start it with launch/tracking_server.sh).
#   MLFLOW_TRACKING_URI=http://tracking-host:5000 launch/slurm_sweep.sh +experiment=sentiment_repr seed=42,43,44,45,46
set -euo pipefail
: "${MLFLOW_TRACKING_URI:?set MLFLOW_TRACKING_URI to a tracking server reachable from the nodes}"
exec python -m synque.run -m hydra/launcher=submitit_slurm \
  hydra.launcher.partition="${PARTITION:-gpu}" \
  hydra.launcher.gpus_per_node="${GPUS:-1}" \
  hydra.launcher.timeout_min="${TIMEOUT_MIN:-240}" \
  hydra.launcher.cpus_per_task="${CPUS:-8}" \
  "$@"
