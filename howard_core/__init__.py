"""Howard: background matting from a plate and a clean plate.

The public entry points are imported lazily so that `import howard_core` stays
cheap for host adapters (Nuke, Blender) that only need one of them.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "matte"]


def matte(plate, clean_plate, output, settings=None, *, report=None, progress=None, cluster=None, chunk_size=None,
          security=None, path_map=None, **overrides):
    """Pull a matte for every plate frame; returns the run report (also written as JSON).

    `settings`: a `howard_core.settings.MatteSettings` (default: all defaults), with `overrides` by
    option name (frames, layers, model, preset, ...; a loaded network as `model` too). `report`: the
    report's path (default beside the outputs); `progress`: called with each event's dict
    (`howard_core.events`). `cluster`: run the job on Dask instead of in this process: "local:N" (N
    worker processes here), "tcp://host:8786" / "tls://host:8786" (a running scheduler; `security` a
    `distributed.security.Security` for TLS) or a scheduler file; `chunk_size` frames per task;
    `path_map` a `howard_core.farm.jobs.PathMap` from this machine's paths to the workers' (see
    `howard_core.farm.dask_engine`).
    """
    from howard_core.settings import MatteSettings

    settings = MatteSettings.build(settings, **overrides)
    if cluster is None:
        if chunk_size is not None or security is not None or path_map is not None:
            from howard_core.errors import HowardError

            raise HowardError("chunk_size and security apply to a cluster job; give cluster= as well")
        from howard_core.pipeline import matte as run

        return run(plate, clean_plate, output, settings, report=report, progress=progress)
    from howard_core.farm.dask_engine import Cluster, matte_on_cluster

    return matte_on_cluster(plate, clean_plate, output, settings, Cluster(cluster, chunk_size, security, path_map),
                            report=report, progress=progress)
