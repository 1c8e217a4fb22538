from remembrancer.cli.main import main

main()
