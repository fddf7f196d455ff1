"""`python -m eval.bench`, as the `ttm-bench` console script."""

from eval.bench import main

main()
