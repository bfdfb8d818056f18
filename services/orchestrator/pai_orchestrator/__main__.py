from pai_orchestrator.shell import main

main()
