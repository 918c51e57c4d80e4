from pipelines import cli
from pipelines.speech import DESCRIPTION, STAGE_NAMES

cli.preflight("speech", DESCRIPTION, STAGE_NAMES)

from pipelines.speech import main  # noqa: E402

cli.exit_with(main())
