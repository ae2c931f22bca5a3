"""The study: presets, the run plan, the runner, the evaluation suite, results and paired statistics, the cost
model and the command line. Built on the core (:mod:`smf_lib`); never imported by it."""
