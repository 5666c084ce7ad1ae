"""Howard on render farms: the engines studios already run, never a scheduler of Howard's own.

Every engine runs the one-machine job (`howard_core.pipeline.matte`, or the `howard matte` command
that wraps it) on chunks of frames with `resume`, so a chunk that is re-run after a lost node
skips what is already written, and outputs equal a one-machine run:

- `dask_engine`: `matte(..., cluster="tcp://host:8786" | "tls://..." | "local:N")`, chunks as Dask
  tasks, one progress stream and one merged report on the client.
- `openjd_bundle`: an Open Job Description job bundle (the format of AWS Deadline Cloud) whose tasks
  run `howard matte --frames CHUNK --resume`, then merge the chunk reports.
- `opencue_outline`: an OpenCue job built with the official `outline` library (opencue-pyoutline).

`jobs` holds what they share: chunking, the command line a chunk runs, path mapping between
workstation and farm mounts, and the merged report.
"""
