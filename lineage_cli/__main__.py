from lineage_cli.main import main

main()
