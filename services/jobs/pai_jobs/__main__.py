from pai_jobs.shell import main

main()
