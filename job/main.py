"""spark-submit entry point: `spark-submit job/main.py --input URI --output URI [...]`.

Takes exactly the options of `featurizer run` (see `featurizer run --help`).
"""

import sys

from featurizer.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
