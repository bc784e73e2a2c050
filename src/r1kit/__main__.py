from r1kit.cli import main

main()
