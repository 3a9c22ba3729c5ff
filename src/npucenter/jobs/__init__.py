"""Job programs the center runs for tenants: ``python -m npucenter.jobs.preprocess|finetune``.

Each program reads a spec file (JSON) written into its work dir by the job runner, with its
inputs (data set, base model) copied beside it (docs/security.md: a job never sees the data
directory), prints its progress to stdout (the job's log), writes its outputs into the work dir
and its summary to ``$NPUCENTER_RESULT_PATH`` (the job's result). :mod:`.data` (the data-set
format, tokenising and packing) imports nothing heavy; torch, transformers and peft are imported
by the programs only.
"""
