"""`python -m search COMMAND ...`: the same as `hpsearch COMMAND ...` (search/main.py)."""

from search.main import main

if __name__ == "__main__":
    main()
