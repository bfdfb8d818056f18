from pai_gateway.shell import main

main()
