"""Run records: provenance files, the QCoDeS DataSet of a training run, and reading them back (`lightloop runs`).

Written by the command layer (cli, calibrate_cli, sweep) around a run; training never imports this package.
"""

from lightloop.records.recording import RECORD_NAME, RunRecording

__all__ = ["RunRecording", "RECORD_NAME"]
