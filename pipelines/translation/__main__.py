from pipelines import cli
from pipelines.translation import main

cli.run_script(main)
