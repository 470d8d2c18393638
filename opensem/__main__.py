from opensem.cli import main

main()
