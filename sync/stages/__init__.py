"""The stages of a run, one module per job: pull -> train -> score -> push."""
