from pipelines import cli
from pipelines.serve import main

cli.run_script(main)
