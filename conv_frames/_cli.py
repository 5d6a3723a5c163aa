"""The conv-frames command line."""


def main() -> int:
    return 0
