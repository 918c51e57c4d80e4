from pipelines import cli
from pipelines.translation import DESCRIPTION, STAGE_NAMES

cli.preflight("translation", DESCRIPTION, STAGE_NAMES)

from pipelines.translation import main  # noqa: E402

cli.exit_with(main())
