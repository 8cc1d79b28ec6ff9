"""Reading results: the claims and recommendation, the headline tables, charts, the report."""
