from duomem.cli.main import main

main()
