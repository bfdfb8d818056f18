from pai_monitoring.shell import main

main()
