from pai_portal.server import main

main()
