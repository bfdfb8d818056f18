from pai_scheduler.shell import main

main()
