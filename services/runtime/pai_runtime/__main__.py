from pai_runtime.shell import main

main()
