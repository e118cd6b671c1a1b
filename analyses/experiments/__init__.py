"""Experiments: the study, the forms comparison, how the circuit formed and the open questions,
composed from the analyses; each returns a result object that the pages show."""
