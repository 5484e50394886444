"""What a finished run tells a person: the results table and speed-ups (`run_report`), the
self-contained `report.html` (`html_report`), and the curation as a table (`curation_table`,
`jestflow export`).

May import: `jestflow.stages` and everything below it.
"""
