from pipelines import cli
from pipelines.speech import main

cli.run_script(main)
