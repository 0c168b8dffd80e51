"""Tools that span both questions: data preparation, the submission checker, the report."""
