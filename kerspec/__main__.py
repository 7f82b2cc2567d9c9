from kerspec.cli import main

main()
