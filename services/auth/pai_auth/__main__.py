from pai_auth.shell import main

main()
