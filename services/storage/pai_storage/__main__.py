from pai_storage.shell import main

main()
