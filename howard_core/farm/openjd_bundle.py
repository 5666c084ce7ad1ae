"""Open Job Description job bundles (the job format of AWS Deadline Cloud) for Howard.

`write_bundle` makes DIR/template.yaml and DIR/parameter_values.yaml:

- job parameters for the plate, clean plate, output, chunk-report folder (PATH parameters, so a
  farm's path-mapping rules rewrite them) and the `howard` command to run;
- step "Matte": one task per chunk (a STRING task parameter over the chunks' `--frames` texts),
  each running `howard matte ... --frames CHUNK --resume`, with every matte option the user gave;
- step "MergeReports", after it: `howard farm merge-reports` over the chunk reports.

Every parameter has its value as its default, so `openjd run DIR/template.yaml` runs the whole job
as it is, and `deadline bundle submit DIR` sends the same job (with parameter_values.yaml) to
Deadline Cloud. The paths are STRING parameters, written as the farm nodes see them (`--path-map`):
OpenJD allows a PATH parameter only a default inside the bundle's own folder, which a plate on
shared storage never is. So the bundle is for farms with shared storage (the usual case for plates),
not for Deadline's job attachments.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from howard_core.errors import HowardError
from howard_core.farm import jobs

SPEC = "jobtemplate-2023-09"


def _yaml():
    try:
        import yaml
    except ImportError:
        raise HowardError("writing a job bundle needs PyYAML, part of Howard's farm extra: "
                          "pip install 'howard-core[farm]'") from None
    return yaml


# Job parameter -> (the FarmJob field it carries, description).
PARAMS = {"Plate": ("plate", "plate sequence, movie or still"), "CleanPlate": ("clean_plate", "clean plate"),
          "Output": ("output", "output pattern or folder"),
          "ReportFolder": ("report_folder", "where each chunk writes its report"),
          "MergedReport": ("merged_report", "the job's merged report"),
          "HowardCommand": ("howard", "the howard executable on the farm nodes")}


def template(spec: jobs.FarmJob, name: str | None = None, cores: int | None = None,
             memory_mib: int | None = None) -> dict:
    """The job template as a dict (see the module docstring)."""
    params = [{"name": param, "type": "STRING", "default": getattr(spec, field), "description": text}
              for param, (field, text) in PARAMS.items()]
    # The chunk's command, written once in jobs.FarmJob, with the paths as job parameters.
    placeholders = replace(spec, plate="{{Param.Plate}}", clean_plate="{{Param.CleanPlate}}",
                           output="{{Param.Output}}", report_folder="{{Param.ReportFolder}}",
                           merged_report="{{Param.MergedReport}}", howard="{{Param.HowardCommand}}")
    matte_argv = placeholders.matte_argv("{{Task.Param.Frames}}",
                                         "{{Param.ReportFolder}}/howard_report.{{Task.Param.Frames}}.json")
    merge_argv = placeholders.merge_argv() + ["--engine", "openjd"]
    matte_step = {
        "name": "Matte",
        "parameterSpace": {"taskParameterDefinitions": [
            {"name": "Frames", "type": "STRING", "range": [jobs.chunk_text(c) for c in spec.chunks]}]},
        "script": {"actions": {"onRun": {"command": matte_argv[0], "args": matte_argv[1:]}}},
    }
    amounts = []
    if cores:
        amounts.append({"name": "amount.worker.vcpu", "min": int(cores)})
    if memory_mib:
        amounts.append({"name": "amount.worker.memory", "min": int(memory_mib)})
    if amounts:
        matte_step["hostRequirements"] = {"amounts": amounts}
    merge_step = {
        "name": "MergeReports",
        "dependencies": [{"dependsOn": "Matte"}],
        "script": {"actions": {"onRun": {"command": merge_argv[0], "args": merge_argv[1:]}}},
    }
    return {"specificationVersion": SPEC, "name": name or f"Howard matte {Path(spec.plate).name}",
            "description": f"Howard: mattes for {spec.plate} in {len(spec.chunks)} chunks",
            "parameterDefinitions": params, "steps": [matte_step, merge_step]}


def validate(doc: dict) -> None:
    """Checks the template, and the job its defaults make, with openjd-model (the reference
    implementation of the schema, which `openjd run` and Deadline Cloud use too)."""
    try:
        from openjd.model import DecodeValidationError, create_job, decode_job_template
    except ImportError:
        raise HowardError("checking a job bundle needs openjd-model, part of Howard's farm extra: "
                          "pip install 'howard-core[farm]'") from None
    try:
        create_job(job_template=decode_job_template(template=doc), job_parameter_values={})
    except DecodeValidationError as exc:
        raise HowardError(f"the generated job template is not valid Open Job Description ({exc}); "
                          f"please report this") from None


def write_bundle(spec: jobs.FarmJob, folder, **template_options) -> Path:
    """Writes the bundle into `folder`; returns the template's path."""
    from howard_core.io import ensure_writable_dir, write_text_atomic

    yaml = _yaml()
    doc = template(spec, **template_options)
    validate(doc)
    folder = Path(folder)
    ensure_writable_dir(folder)
    values = {"parameterValues": [{"name": p["name"], "value": p["default"]} for p in doc["parameterDefinitions"]]}
    write_text_atomic(folder / "parameter_values.yaml", yaml.safe_dump(values, sort_keys=False))
    path = folder / "template.yaml"
    write_text_atomic(path, yaml.safe_dump(doc, sort_keys=False, width=1000))
    return path
